"""A dropped session loses nothing: steps keep running and are resumed by offset, run once."""

from __future__ import annotations

import asyncio

import pytest

from agentpool.steps.protocol import StepRequest
from agentpool.steps.session import SessionLost, StepNotStarted


def counting_step(container, step_id: str = "resumable") -> StepRequest:
    counter = container.root / "runs"
    gate = container.root / "gate"
    script = (
        f"echo run >> {counter}; echo before\n"
        f"while [ ! -e {gate} ]; do sleep 0.01; done\n"
        "echo after; echo oops >&2; exit 7\n"
    )
    return StepRequest(step_id=step_id, script=script.encode())


async def test_dropped_session_then_resume_gets_full_output_and_exit_code(
    open_session, container
) -> None:
    first, shell = await open_session()
    handle = await first.submit(counting_step(container))
    await first_output(handle)

    shell.drop()
    with pytest.raises(SessionLost):
        await handle.wait()
    (container.root / "gate").touch()
    second, _ = await open_session()
    resumed = await second.resume("resumable", 0)
    result = await resumed.wait()

    assert (result.exit_code, result.reason) == (7, "exit")
    assert resumed.tail == b"before\nafter\noops\n"
    assert (container.root / "runs").read_text() == "run\n"


async def first_output(handle) -> None:
    """Wait until the step has streamed something (it is running, not merely queued)."""
    arrived = asyncio.Event()
    handle.on_output = lambda offset, data: arrived.set()
    if handle.offset == 0:
        async with asyncio.timeout(10):
            await arrived.wait()


async def test_resubmit_after_drop_resumes_from_offset_without_rerun(
    open_session, container
) -> None:
    first, shell = await open_session()
    request = counting_step(container)
    handle = await first.submit(request)
    await first_output(handle)
    seen = handle.offset
    shell.drop()
    (container.root / "gate").touch()

    second, _ = await open_session()
    again = await second.submit(request, offset=seen)
    result = await again.wait()

    assert result.exit_code == 7
    assert again.tail == b"after\noops\n"
    assert result.total_bytes == seen + len(b"after\noops\n")
    assert (container.root / "runs").read_text() == "run\n"


async def test_resume_of_running_step_streams_until_it_ends(open_session, container) -> None:
    first, shell = await open_session()
    handle = await first.submit(counting_step(container))
    await first_output(handle)
    shell.drop()

    second, _ = await open_session()
    resumed = await second.resume("resumable", 0)
    await resumed.started.wait()
    (container.root / "gate").touch()

    assert (await resumed.wait()).exit_code == 7
    assert resumed.tail == b"before\nafter\noops\n"


async def test_resume_of_step_never_started(open_session) -> None:
    session, _ = await open_session()

    handle = await session.resume("never", 0)

    with pytest.raises(StepNotStarted):
        await handle.wait()
    assert session.open


async def test_close_waits_for_watched_steps_then_driver_exits_zero(
    open_session, container
) -> None:
    session, shell = await open_session()
    handle = await session.submit(counting_step(container))
    await first_output(handle)

    (container.root / "gate").touch()
    async with asyncio.timeout(10):
        await session.close()

    assert (await handle.wait()).exit_code == 7
    assert await shell.result() == 0
