"""Without `setsid` (a userland that lacks it) steps still run, time out and report results."""

from __future__ import annotations

from agentpool.steps.protocol import StepRequest
from agentpool.steps.session import Session


async def test_steps_run_and_time_out_without_setsid(
    container_without_setsid, shell_opener
) -> None:
    session = await Session.start(await shell_opener(container_without_setsid))
    try:
        ok = await session.submit(StepRequest("ok", b"echo fine; exit 4"))
        slow = await session.submit(StepRequest("slow", b"exec sleep 30", timeout=1, grace=1))

        assert session.mode == "shared"
        assert ((await ok.wait()).exit_code, ok.tail) == (4, b"fine\n")
        assert (await slow.wait()).reason == "timeout"
    finally:
        await session.abort()
