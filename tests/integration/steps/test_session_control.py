"""Timeouts and cancellation kill the step's whole process group; reasons are distinct."""

from __future__ import annotations

import asyncio

import pytest

from agentpool.steps.protocol import StepRequest
from agentpool.steps.session import StepNotStarted


def step(step_id: str, script: str, **kwargs: object) -> StepRequest:
    return StepRequest(step_id=step_id, script=script.encode(), **kwargs)  # type: ignore[arg-type]


async def test_timeout_kills_the_process_group_children_too(
    open_session, container, until, alive
) -> None:
    session, _ = await open_session()
    child = container.root / "child"

    handle = await session.submit(
        step("slow", f"sleep 30 & echo $! > {child}; wait", timeout=1, grace=2)
    )
    result = await handle.wait()

    assert (result.exit_code, result.reason) == (143, "timeout")
    await until(lambda: not alive(int(child.read_text())), 5)


async def test_timeout_escalates_to_kill_when_term_is_ignored(open_session) -> None:
    session, _ = await open_session()

    handle = await session.submit(
        step("stubborn", "trap '' TERM; echo ready; while :; do sleep 1; done", timeout=1, grace=1)
    )
    result = await handle.wait()

    assert (result.exit_code, result.reason) == (137, "timeout")
    assert handle.tail == b"ready\n"


async def test_cancel_in_session(open_session, container, until, alive) -> None:
    session, _ = await open_session()
    child = container.root / "child"
    handle = await session.submit(step("long", f"sleep 30 & echo $! > {child}; echo go; wait"))
    await until(lambda: handle.tail == b"go\n")

    await session.cancel("long")
    result = await handle.wait()

    assert (result.exit_code, result.reason) == (143, "cancelled")
    await until(lambda: not alive(int(child.read_text())), 5)


async def test_cancel_from_a_separate_exec(open_session, container) -> None:
    session, _ = await open_session()
    handle = await session.submit(step("long", "echo go; sleep 30"))
    await handle.started.wait()

    other, _ = await open_session()
    await other.cancel("long")
    async with asyncio.timeout(10):
        await other.close()

    assert (await handle.wait()).reason == "cancelled"


async def test_cancel_of_finished_step_changes_nothing(open_session) -> None:
    session, _ = await open_session()
    handle = await session.submit(step("done", "exit 5"))
    await handle.wait()

    await session.cancel("done")
    again = await session.resume("done", 0)

    assert (await again.wait()).exit_code == 5
    assert (await again.wait()).reason == "exit"


async def test_other_steps_go_on_while_one_is_cancelled(open_session) -> None:
    session, _ = await open_session()
    long = await session.submit(step("long", "sleep 30"))
    short = await session.submit(step("short", "echo ok"))

    await long.started.wait()
    await session.cancel("long")

    assert (await short.wait()).exit_code == 0
    assert (await long.wait()).reason == "cancelled"


async def test_cancel_racing_the_start_still_cancels(open_session) -> None:
    session, _ = await open_session()

    handle = await session.submit(step("racy", "sleep 30"))
    await session.cancel("racy")

    assert (await handle.wait()).reason == "cancelled"


async def test_cancel_before_run_stops_the_step_when_it_arrives(open_session) -> None:
    session, _ = await open_session()

    await session.cancel("early")
    handle = await session.submit(step("early", "sleep 30"))

    assert (await handle.wait()).reason == "cancelled"


async def test_forget_removes_a_finished_step_only(open_session, container) -> None:
    session, _ = await open_session()
    done = await session.submit(step("done", "echo x"))
    await done.wait()
    running = await session.submit(step("running", "sleep 30"))
    await running.started.wait()

    await session.forget("done")
    await session.forget("running")
    probe = await session.resume("done", 0)

    with pytest.raises(StepNotStarted):
        await probe.wait()
    assert (container.state_dir / "running" / "started").exists()
