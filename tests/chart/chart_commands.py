"""Running the commands the chart tests drive (kubectl, install.md's command lines)."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path


def succeed(
    argv: Sequence[str],
    *,
    what: str,
    stdin: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> str:
    """Stdout of `argv`, which must exit 0; `what` names it in the failure."""
    done = subprocess.run(
        list(argv),
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, f"{what}: {done.stderr}"
    return done.stdout
