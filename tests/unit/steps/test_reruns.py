"""What a build does when an agent it ran on is lost: re-run, retry the step alone, or fail."""

from __future__ import annotations

from agentpool.model import StepPhase
from agentpool.steps.reruns import AgentLoss, RanStep, failed_message, plan, rerun_message
from agentpool.steps.scheduling import QueuedStep

T0 = "2026-01-01T00:00:00Z"


def ran(name: str, order: int, agent: str = "a", phase: StepPhase = StepPhase.SUCCEEDED) -> RanStep:
    return RanStep(QueuedStep("ci", name, "b", order, T0), agent, phase)


def test_a_step_whose_build_ran_nothing_on_the_lost_agent_follows_the_retry_rules() -> None:
    loss = plan([ran("checkout", 0, agent="elsewhere")], {"a"}, stopped=False, retry=True)

    assert (loss.verdict, loss.again) == (AgentLoss.STEP_ONLY, ())


def test_the_build_reruns_what_succeeded_on_the_lost_agents_in_build_order() -> None:
    history = [ran("test", 2), ran("checkout", 0, agent="b"), ran("deps", 1), ran("x", 0, "c")]

    loss = plan(history, {"a", "b"}, stopped=False, retry=True)

    assert loss.verdict is AgentLoss.RERUN
    assert [s.name for s in loss.again] == ["checkout", "deps", "test"]


def test_without_retries_left_the_step_fails_and_the_build_is_not_rerun() -> None:
    loss = plan([ran("checkout", 0)], {"a"}, stopped=False, retry=False)

    assert (loss.verdict, [r.step.name for r in loss.lost_with]) == (AgentLoss.FAIL, ["checkout"])
    message = failed_message(loss, "agent a: deleted", "b")
    assert "checkout of build b ran there" in message
    assert "agentpool build rerun b" in message and "spec.retries" in message


def test_a_stopped_build_is_not_rerun() -> None:
    history = [ran("checkout", 0), ran("compile", 1, phase=StepPhase.FAILED)]

    loss = plan(history, {"a"}, stopped=True, retry=True)

    assert loss.verdict is AgentLoss.FAIL
    assert "already failed" in loss.why


def test_deleted_steps_are_not_rerun_and_nothing_left_fails_the_step() -> None:
    deleted = RanStep(QueuedStep("ci", "gone", "b", 0, T0), "a", StepPhase.SUCCEEDED, True)

    some = plan([deleted, ran("deps", 1)], {"a"}, stopped=False, retry=True)
    none = plan([deleted], {"a"}, stopped=False, retry=True)

    assert (some.verdict, [s.name for s in some.again]) == (AgentLoss.RERUN, ["deps"])
    assert (none.verdict, none.again) == (AgentLoss.FAIL, ())
    assert "deleted" in none.why


def test_the_rerun_message_names_the_lost_agent_the_step_and_where_the_build_starts() -> None:
    assert rerun_message("p-x", "compile", "checkout", "b") == (
        "agent p-x was lost with build b's workspace while step compile ran; the build runs "
        "again from step checkout on a new agent"
    )


def test_steps_the_runner_never_knew_on_the_lost_agent_fail_the_step() -> None:
    loss = plan([], {"a"}, stopped=False, retry=True, ran_earlier={"a"})

    assert loss.verdict is AgentLoss.FAIL
    assert "cannot be run again" in failed_message(loss, "agent a: gone", "b")
    assert plan([], {"a"}, stopped=False, retry=True, ran_earlier={"z"}).verdict is (
        AgentLoss.STEP_ONLY
    )
