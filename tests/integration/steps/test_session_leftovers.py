"""No process of a step outlives it: keepers and their timeout timers end with the step."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from agentpool.steps.protocol import StepRequest


def processes_in(root: Path) -> list[int]:
    """Pids working in, or naming a path under, `root` (the container's directory)."""
    base = str(root.resolve())
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            line = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = str((entry / "cwd").readlink())
            stat = (entry / "stat").read_text()
            if stat.rsplit(")", 1)[1].split()[0] == "Z":
                continue
            if base in line or cwd == base or cwd.startswith(base + "/"):
                found.append(int(entry.name))
    return found


async def test_many_trivial_steps_leave_no_process(open_session, container, until) -> None:
    session, shell = await open_session()

    for i in range(40):
        handle = await session.submit(
            StepRequest(step_id=f"t{i}", script=b"true", timeout=3600, grace=3600)
        )
        assert (await handle.wait()).exit_code == 0
    async with asyncio.timeout(10):
        await session.close()
    await shell.result()

    # Keepers end a moment after writing `rc`; a leaked timer would sleep for an hour.
    await until(lambda: not processes_in(container.root), 10.0)


async def test_no_env_value_of_a_step_stays_on_the_agents_disk(open_session, container) -> None:
    session, shell = await open_session()
    secret = "s3cr3t-token-value"
    request = StepRequest(
        step_id="s1", script=b'[ -n "$TOKEN" ] && echo has-token', env={"TOKEN": secret}
    )

    result = await (await session.submit(request)).wait()
    async with asyncio.timeout(10):
        await session.close()
    await shell.result()

    assert result.exit_code == 0
    leftovers = [p for p in container.state_dir.rglob("*") if p.is_file()]
    assert leftovers  # the step's output and exit code are kept until the step is forgotten
    assert not [p for p in leftovers if secret.encode() in p.read_bytes()]
