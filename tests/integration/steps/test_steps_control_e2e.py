"""Timeouts, cancellation by deletion and bad input, through the operator on the sandbox."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from step_client import BuildSteps

from agentpool.model import SCRIPT_MAX_BYTES
from agentpool_sandbox.reaper import alive
from agentpool_sandbox.testing import eventually


@pytest.fixture
def sandbox_time_scale() -> float:
    return 0.1


async def running_home(buildsteps: BuildSteps, step: str) -> Path:
    """The directory of the agent a step runs on, once it runs."""
    running = await buildsteps.wait_phase(step, "Running")
    return buildsteps.home(running["agent"])


async def running_pid(buildsteps: BuildSteps, step: str) -> tuple[Path, int]:
    """The agent's directory and the pid a running step wrote to `<step>.pid` there."""
    home = await running_home(buildsteps, step)
    await eventually((home / f"{step}.pid").exists, 10, "the step's pid file")
    return home, int((home / f"{step}.pid").read_text())


async def test_a_step_past_its_timeout_is_killed_and_fails(
    operator: Any, buildsteps: BuildSteps
) -> None:
    await buildsteps.pool("p")
    await buildsteps.create("slow", 'echo $$ >"$HOME/slow.pid"; sleep 30', timeout="1s", retries=3)

    slow = (await buildsteps.wait_final("slow"))["slow"]
    pid = int((buildsteps.home(slow["agent"]) / "slow.pid").read_text())

    assert (slow["phase"], slow["reason"], slow["attempts"]) == ("Failed", "Timeout", 1)
    assert "timeout of 1 s" in slow["message"]
    assert not alive(pid)


async def test_deleting_a_running_step_kills_it_and_skips_the_builds_later_steps(
    operator: Any, buildsteps: BuildSteps
) -> None:
    await buildsteps.pool("p")
    await buildsteps.create(
        "long", 'echo $$ >"$HOME/long.pid"; sleep 30; touch "$HOME/finished"', build="b"
    )
    await buildsteps.create("deploy", "echo DEPLOYING", build="b", order=1)
    await buildsteps.create("cleanup", "echo cleanup", build="b", order=2, runPolicy="Always")
    home, pid = await running_pid(buildsteps, "long")

    await buildsteps.delete("long")
    await eventually(lambda: not alive(pid), 15, "the deleted step's process to end")
    after = await buildsteps.wait_final("deploy", "cleanup")

    assert not (home / "finished").exists()
    assert (after["deploy"]["phase"], after["deploy"]["reason"]) == (
        "Skipped",
        "PreviousStepCancelled",
    )
    assert "step long of build b was cancelled" in after["deploy"]["message"]
    assert (after["cleanup"]["phase"], after["cleanup"]["logTail"]) == ("Succeeded", "cleanup\n")
    assert await buildsteps.status("long") == {}


async def test_the_cancel_annotation_stops_a_running_step_and_the_rest_of_its_build(
    operator: Any, buildsteps: BuildSteps
) -> None:
    await buildsteps.pool("p")
    await buildsteps.create(
        "work", 'echo $$ >"$HOME/work.pid"; sleep 30; touch "$HOME/finished"', build="c"
    )
    await buildsteps.create("deploy", "echo DEPLOYING", build="c", order=1)
    home, pid = await running_pid(buildsteps, "work")

    await buildsteps.annotate("work", {"agentpool.dev/cancel": "true"})
    statuses = await buildsteps.wait_final("work", "deploy")

    assert not alive(pid) and not (home / "finished").exists()
    assert (statuses["work"]["phase"], statuses["work"]["reason"]) == ("Cancelled", "Cancelled")
    assert "agentpool.dev/cancel=true" in statuses["work"]["message"]
    assert (statuses["deploy"]["phase"], statuses["deploy"]["reason"]) == (
        "Skipped",
        "PreviousStepCancelled",
    )


async def test_the_cancel_annotation_on_a_queued_step_cancels_it_before_it_runs(
    operator: Any, buildsteps: BuildSteps
) -> None:
    await buildsteps.pool("p", maxAgents=1)
    await buildsteps.create("first", 'while [ ! -e "$HOME/go" ]; do sleep 0.05; done', build="q")
    await buildsteps.create("second", 'touch "$HOME/second-ran"', build="q", order=1)
    running = await buildsteps.wait_phase("first", "Running")
    home = buildsteps.home(running["agent"])

    await buildsteps.annotate("second", {"agentpool.dev/cancel": "true"})
    second = (await buildsteps.wait_final("second"))["second"]
    (home / "go").touch()
    first = (await buildsteps.wait_final("first"))["first"]

    assert (second["phase"], second["reason"]) == ("Cancelled", "Cancelled")
    assert first["phase"] == "Succeeded"
    assert not (home / "second-ran").exists()


async def test_a_failed_build_runs_again_under_its_name_once_its_failed_step_is_deleted(
    operator: Any, buildsteps: BuildSteps
) -> None:
    await buildsteps.pool("p")
    await buildsteps.create("test", "exit 3", build="r")
    await buildsteps.create("deploy", "echo DEPLOYING", build="r", order=1)
    first = await buildsteps.wait_final("test", "deploy")
    await buildsteps.create("retry-while-failed", "echo early", build="r", order=2)
    early = (await buildsteps.wait_final("retry-while-failed"))["retry-while-failed"]
    for name in ("test", "deploy", "retry-while-failed"):
        await buildsteps.delete(name)

    async def deleted() -> bool:
        return all([await buildsteps.status(n) == {} for n in ("test", "deploy")])

    await eventually(deleted, 10, "the build's steps to be deleted")
    await buildsteps.create("test", "echo fixed", build="r")
    await buildsteps.create("deploy", "echo DEPLOYING", build="r", order=1)
    again = await buildsteps.wait_final("test", "deploy")

    assert (first["test"]["phase"], first["deploy"]["reason"]) == ("Failed", "PreviousStepFailed")
    assert early["reason"] == "PreviousStepFailed"  # remembered while the failed step exists
    assert [again[n]["phase"] for n in ("test", "deploy")] == ["Succeeded", "Succeeded"]
    assert again["deploy"]["logTail"] == "DEPLOYING\n"


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


async def test_pool_not_found_is_cleared_as_soon_as_the_pool_exists(
    operator: Any, buildsteps: BuildSteps
) -> None:
    # The pool comes with no agent able to start: the step waits, but not for a missing pool.
    await buildsteps.create("early", "echo early", pool="stuck")
    await buildsteps.wait_phase("early", "Pending")
    unstartable = {"metadata": {"annotations": {"sandbox.agentpool.dev/profile": "unschedulable"}}}

    await buildsteps.pool("stuck", minIdle=0, maxAgents=1, template_extra=unstartable)
    queued = await buildsteps.wait_phase("early", "Queued")

    assert queued["reason"] == "Queued"
    assert "agent of pool default/stuck" in queued["message"]


async def test_a_queued_step_says_what_it_waits_for_and_which_setting_limits_it(
    operator: Any, buildsteps: BuildSteps
) -> None:
    await buildsteps.pool("p", minIdle=1, maxAgents=1)
    await buildsteps.create("holder", 'while [ ! -e "$HOME/go" ]; do sleep 0.05; done', build="a")
    home = await running_home(buildsteps, "holder")
    await buildsteps.create("waiter", "echo done", build="b")

    queued = await buildsteps.wait_phase("waiter", "Queued")
    (home / "go").touch()
    done = (await buildsteps.wait_final("waiter"))["waiter"]

    assert "waiting for a free agent of pool default/p (spec.maxAgents 1)" in queued["message"]
    assert "0 build(s) ahead of this one" in queued["message"]
    assert done["phase"] == "Succeeded"
