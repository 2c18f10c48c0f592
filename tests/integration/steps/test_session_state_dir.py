"""The operator's agent state dir reaches the driver over stdin; the container's own
AGENTPOOL_STATE_DIR still wins; `agentpool logs` reads the same dir."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess

from agentpool.steps.logs import log_command
from agentpool.steps.protocol import StepRequest
from agentpool.steps.session import Session


async def _run_one(container, shell_opener, state_dir: str) -> None:
    shell = await shell_opener(container)
    session = await Session.start(shell, tail_bytes=4096, state_dir=state_dir)
    handle = await session.submit(StepRequest(step_id="s1", script=b"echo here"))
    assert (await handle.wait()).exit_code == 0
    async with asyncio.timeout(10):
        await session.close()
    await shell.result()


async def test_steps_use_the_state_dir_the_operator_sends(container, shell_opener) -> None:
    env = {k: v for k, v in container.env.items() if k != "AGENTPOOL_STATE_DIR"}
    bare = dataclasses.replace(container, env=env)
    configured = container.root / "configured"

    await _run_one(bare, shell_opener, str(configured))

    assert (configured / "s1" / "out").read_bytes() == b"here\n"
    assert not container.state_dir.exists()
    shown = await asyncio.create_subprocess_exec(
        *log_command("s1", str(configured)), env=env, stdout=subprocess.PIPE
    )
    assert (await shown.communicate())[0] == b"here\n"


async def test_the_containers_own_state_dir_wins(container, shell_opener) -> None:
    configured = container.root / "configured"

    await _run_one(container, shell_opener, str(configured))

    assert (container.state_dir / "s1" / "out").read_bytes() == b"here\n"
    assert not configured.exists()
