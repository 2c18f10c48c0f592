"""How far a step's attempt got, and which agents it is tied to."""

from __future__ import annotations

from agentpool.model import BuildStepSpec
from agentpool.steps.runs import AgentRef, Attempt, StepRun


def run() -> StepRun:
    spec = BuildStepSpec(pool="p", build="b", script="make")
    return StepRun("ns", "s", "uid", "ns/p", spec, created="2026-11-24T00:00:00Z")


def recovered(status: dict[str, object]) -> StepRun:
    step = run()
    for name, value in StepRun.recovered_state(status).items():
        setattr(step, name, value)
    return step


def test_a_new_step_waits_and_may_start_anywhere() -> None:
    step = run()

    assert (step.attempt, step.submitted, step.agent, step.recovered_agent) == (
        Attempt.WAITING,
        False,
        None,
        None,
    )


def test_a_sent_step_is_never_started_blindly_again() -> None:
    step = run()
    step.sent(AgentRef("pod-a", "n1"))

    assert (step.attempt, step.submitted, step.agent) == (Attempt.SUBMITTED, True, "pod-a")


def test_a_step_found_running_is_resumed_on_its_home_even_once_sent() -> None:
    step = recovered({"phase": "Running", "agent": "pod-a", "attempts": 2, "logBytes": 10})
    assert (step.attempt, step.recovered_agent, step.attempts, step.offset) == (
        Attempt.RECOVERED,
        "pod-a",
        2,
        10,
    )

    step.sent(AgentRef("pod-a", "n1"))

    assert (step.attempt, step.recovered_agent, step.submitted) == (
        Attempt.RECOVERED,
        "pod-a",
        True,
    )


def test_a_step_that_was_not_running_recovers_nothing() -> None:
    assert recovered({"phase": "Queued", "agent": "pod-a"}).attempt is Attempt.WAITING


def test_a_retry_starts_from_nothing_but_remembers_where_the_last_one_went() -> None:
    step = recovered({"phase": "Running", "agent": "pod-a", "attempts": 1})
    step.sent(AgentRef("pod-a", "n1"))
    step.add_output(b"partial")

    step.next_attempt()

    assert (step.attempt, step.attempts, step.offset, step.log_tail()) == (
        Attempt.WAITING,
        2,
        0,
        "",
    )
    assert (step.home, step.recovered_agent, step.agent) == (None, None, "pod-a")


def test_a_placed_step_keeps_its_home_across_a_retry() -> None:
    step = run()
    step.home = "pod-a"
    step.sent(AgentRef("pod-a", "n1"))

    step.next_attempt()

    assert step.home == "pod-a"


def test_a_rerun_is_a_new_attempt_pending_anywhere_from_nothing() -> None:
    step = run()
    step.attempts = 1
    step.sent(AgentRef("pod-a", "n1"))
    step.home = "pod-a"
    step.add_output(b"done\n")

    step.rerun()

    assert (step.attempts, step.attempt, step.agent, step.home) == (2, Attempt.WAITING, None, None)
    assert (step.offset, step.log_tail(), step.phase.value) == (0, "", "Queued")
    assert step.step_id == "uid.2"  # a directory of its own: the step really runs again
