"""The driver's pump is woken by a signal per message; a burst of messages must not derail it."""

from __future__ import annotations

import asyncio

from agentpool.steps import protocol
from agentpool.steps.protocol import StepRequest


async def test_pump_keeps_framing_output_through_a_burst_of_messages(open_session) -> None:
    # bash 5.2 runs a pending trap while it parses a `$(...)` being expanded, and the trap's
    # own parse breaks that one ("unexpected EOF while looking for matching `)'"); in the
    # pump that ended its loop: no frame ever again, every watched step waited forever.
    session, shell = await open_session()
    done = await session.submit(StepRequest("done", b"echo 0"))
    await done.wait()

    handles = []
    for i in range(40):
        handles.append(await session.submit(StepRequest(f"w{i}", f"echo {i}".encode())))
        # Acknowledged without effect (the step has ended), each wakes the pump once.
        await shell.write(protocol.build_cancel("done") * 25)
    async with asyncio.timeout(20):
        results = [await h.wait() for h in handles]

    assert [r.exit_code for r in results] == [0] * 40, session.driver_stderr
    assert [h.tail for h in handles] == [f"{i}\n".encode() for i in range(40)]
    async with asyncio.timeout(10):
        await session.close()
    assert await shell.result() == 0
