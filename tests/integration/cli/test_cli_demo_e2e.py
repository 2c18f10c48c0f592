"""`agentpool demo` end to end, as `make demo` runs it: a real process, a real exit code."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from cli_cluster import AGENTPOOL, ENV

DEMO_WITHIN = 90.0


def test_demo_behaves_as_designed_and_cleans_up(tmp_path: Path) -> None:
    env = {**ENV, "TMPDIR": str(tmp_path)}

    done = subprocess.run(
        [*AGENTPOOL, "demo"],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=DEMO_WITHIN,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert "The demo behaved as designed." in done.stdout
    sessions = re.search(r"Exec sessions: (\d+) opened for (\d+) steps run", done.stdout)
    peak = re.search(r"Peak API connections: (\d+) of the pool's limit (\d+)", done.stdout)
    assert sessions and peak, done.stdout
    assert 0 < int(sessions[1]) < int(sessions[2])
    assert int(peak[1]) <= int(peak[2])
    assert re.search(r"release-test\s+│\s+Failed\s+│\s+1\s", done.stdout), done.stdout
    assert re.search(r"release-publish\s+│\s+Skipped", done.stdout), done.stdout
    assert list(tmp_path.iterdir()) == []
