"""Timeouts, cancellation by deletion and bad input, through the operator on the sandbox."""

from __future__ import annotations

from typing import Any

import pytest
from polling import eventually
from step_client import BuildSteps

from agentpool.model import SCRIPT_MAX_BYTES
from agentpool.sandbox.reaper import alive


@pytest.fixture
def sandbox_time_scale() -> float:
    return 0.1


async def test_a_step_past_its_timeout_is_killed_and_fails(
    operator: Any, buildsteps: BuildSteps
) -> None:
    await buildsteps.pool("p")
    await buildsteps.create("slow", "echo $$ > slow.pid; sleep 30", timeout="1s", retries=3)

    slow = (await buildsteps.wait_final("slow"))["slow"]
    pid = int((buildsteps.home(slow["agent"]) / "slow.pid").read_text())

    assert (slow["phase"], slow["reason"], slow["attempts"]) == ("Failed", "Timeout", 1)
    assert "timeout of 1 s" in slow["message"]
    assert not alive(pid)


async def test_deleting_a_running_step_kills_it_and_the_build_goes_on(
    operator: Any, buildsteps: BuildSteps
) -> None:
    await buildsteps.pool("p")
    await buildsteps.create("long", "echo $$ > long.pid; sleep 30; touch finished", build="b")
    await buildsteps.create("next", "echo next", build="b", order=1)
    running = await buildsteps.wait_phase("long", "Running")
    home = buildsteps.home(running["agent"])
    pid_file = home / "long.pid"
    await eventually(pid_file.exists, 10, "the step's pid file")
    pid = int(pid_file.read_text())

    await buildsteps.delete("long")
    await eventually(lambda: not alive(pid), 15, "the deleted step's process to end")
    after = (await buildsteps.wait_final("next"))["next"]

    assert not (home / "finished").exists()
    assert (after["phase"], after["logTail"]) == ("Succeeded", "next\n")
    assert await buildsteps.status("long") == {}


async def test_a_deleted_step_held_by_a_finalizer_ends_cancelled(
    operator: Any, buildsteps: BuildSteps
) -> None:
    await buildsteps.pool("p")
    hold = ("example.com/hold",)
    await buildsteps.create("held", "sleep 30", build="b", finalizers=hold)
    await buildsteps.create("queued", "echo never", build="b", order=1, finalizers=hold)
    await buildsteps.wait_phase("held", "Running")

    await buildsteps.delete("queued")
    await buildsteps.delete("held")
    statuses = await buildsteps.wait_final("held", "queued")

    assert (statuses["held"]["phase"], statuses["held"]["reason"]) == ("Cancelled", "Cancelled")
    assert statuses["held"]["exitCode"] == 143
    assert (statuses["queued"]["phase"], statuses["queued"]["reason"]) == ("Cancelled", "Deleted")


async def test_bad_input_fails_with_a_reason_and_an_event(
    operator: Any, buildsteps: BuildSteps, reader: Any
) -> None:
    await buildsteps.pool("p")
    await buildsteps.create("nocontainer", "echo x", container="missing")
    await buildsteps.create("blank", "  \n ")
    # Under the CRD's character limit, over the operator's byte limit.
    await buildsteps.create("huge", "#" + "é" * (SCRIPT_MAX_BYTES // 2))
    await buildsteps.create("fine", "echo fine")

    statuses = await buildsteps.wait_final("nocontainer", "blank", "huge", "fine")
    reasons = {n: await reader.reasons(n) for n in ("nocontainer", "blank", "huge")}

    assert statuses["fine"]["phase"] == "Succeeded"
    expected = {
        "nocontainer": "ContainerNotFound",
        "blank": "InvalidScript",
        "huge": "InvalidScript",
    }
    for name, reason in expected.items():
        assert (statuses[name]["phase"], statuses[name]["reason"]) == ("Failed", reason)
        assert reasons[name] == [reason]
    assert "'missing'" in statuses["nocontainer"]["message"]
    assert "ConfigMap" in statuses["huge"]["message"]


async def test_a_step_of_an_unknown_pool_waits_until_the_pool_exists(
    operator: Any, buildsteps: BuildSteps
) -> None:
    await buildsteps.create("early", "echo early", pool="later")
    pending = await buildsteps.wait_phase("early", "Pending")

    await buildsteps.pool("later")
    early = (await buildsteps.wait_final("early"))["early"]

    assert pending["reason"] == "PoolNotFound"
    assert "later" in pending["message"]
    assert (early["phase"], early["logTail"]) == ("Succeeded", "early\n")
