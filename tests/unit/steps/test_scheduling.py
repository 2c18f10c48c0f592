"""Build queues: order, skip semantics and retry decisions."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from agentpool.model import RunPolicy, StepPhase
from agentpool.steps.scheduling import (
    PREVIOUS_STEP_CANCELLED,
    PREVIOUS_STEP_FAILED,
    Action,
    BuildQueue,
    Failure,
    QueuedStep,
    build_order,
    should_retry,
)

T0 = "2026-01-01T00:00:00Z"
T1 = "2026-01-01T00:00:01Z"


def step(name: str, order: int = 0, created: str = T0, **kw: object) -> QueuedStep:
    return QueuedStep("ci", name, "b", order, created, **kw)  # type: ignore[arg-type]


def test_order_then_creation_time_then_name() -> None:
    steps = [step("c", 1, T0), step("b", 0, T1), step("a", 0, T1), step("z", 0, T0)]

    assert [s.name for s in build_order(steps)] == ["z", "a", "b", "c"]


def test_next_is_first_in_order_and_stays_until_recorded() -> None:
    queue = BuildQueue(("ci", "b"))
    queue.add(step("late", 2))
    queue.add(step("early", 1))

    first = queue.next()
    again = queue.next()
    queue.record("early", StepPhase.SUCCEEDED)

    assert first is not None and first.step.name == "early" and first.action is Action.RUN
    assert again == first
    assert queue.next().step.name == "late"  # type: ignore[union-attr]


def test_failure_skips_later_steps_except_run_policy_always() -> None:
    queue = BuildQueue(("ci", "b"))
    queue.add(step("s1", 1))
    queue.add(step("s2", 2))
    queue.add(step("s3", 3, run_policy=RunPolicy.ALWAYS))
    queue.record("s1", StepPhase.FAILED)

    skipped = queue.skippable()
    decision = queue.next()

    assert [d.step.name for d in skipped] == ["s2"]
    assert skipped[0].reason == PREVIOUS_STEP_FAILED
    assert "s1" in skipped[0].message
    assert decision is not None and decision.step.name == "s2" and decision.action is Action.SKIP


def test_step_arriving_after_failure_is_skipped() -> None:
    queue = BuildQueue(("ci", "b"))
    queue.record("s1", StepPhase.FAILED)

    queue.add(step("s9", 9))

    assert queue.next().action is Action.SKIP  # type: ignore[union-attr]


def test_first_failure_is_the_one_named() -> None:
    queue = BuildQueue(("ci", "b"))
    queue.record("s1", StepPhase.FAILED)
    queue.record("s2", StepPhase.FAILED)
    queue.add(step("s3"))

    assert "step s1 " in queue.next().message  # type: ignore[union-attr]


def test_skipped_steps_do_not_fail_the_build() -> None:
    queue = BuildQueue(("ci", "b"))
    queue.record("s2", StepPhase.SKIPPED)
    queue.add(step("s3"))

    assert queue.next().action is Action.RUN  # type: ignore[union-attr]


def test_step_of_another_build_is_refused() -> None:
    queue = BuildQueue(("ci", "other"))

    with pytest.raises(ValueError, match="belongs to build"):
        queue.add(step("s1"))


def test_the_build_belongs_on_the_agent_of_its_latest_finished_step() -> None:
    queue = BuildQueue(("ci", "b"))
    later, earlier = datetime(2026, 1, 1, 0, 0, 2, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC)

    queue.ran_on("replacement", later)
    queue.ran_on("lost", earlier)  # listed after, finished before

    assert queue.agent == "replacement"


@pytest.mark.parametrize(
    ("failure", "attempts", "retries", "expected"),
    [
        (Failure.AGENT_LOST, 1, 1, True),
        (Failure.AGENT_LOST, 2, 1, False),
        (Failure.SESSION_LOST, 1, 0, False),
        (Failure.QUOTA_TIMEOUT, 3, 5, True),
        (Failure.SCRIPT, 1, 10, False),
        (Failure.TIMEOUT, 1, 10, False),
        (Failure.CANCELLED, 1, 10, False),
    ],
)
def test_only_infrastructure_failures_are_retried(
    failure: Failure, attempts: int, retries: int, expected: bool
) -> None:
    assert should_retry(failure, attempts, retries) is expected


def test_cancellation_skips_later_on_success_steps_naming_the_cancelled_step() -> None:
    queue = BuildQueue(("ci", "b"))
    queue.add(step("deploy", 2))
    queue.add(step("notify", 3, run_policy=RunPolicy.ALWAYS))
    queue.record("build", StepPhase.CANCELLED)

    deploy = queue.next()
    assert deploy is not None and deploy.action is Action.SKIP
    assert deploy.reason == PREVIOUS_STEP_CANCELLED
    assert "step build of build b was cancelled" in deploy.message
    queue.record("deploy", StepPhase.SKIPPED)
    assert queue.next().action is Action.RUN  # type: ignore[union-attr]


def test_a_failure_is_remembered_only_while_a_failed_step_exists() -> None:
    queue = BuildQueue(("ci", "b"))
    queue.record("test", StepPhase.FAILED)
    queue.record("lint", StepPhase.FAILED)  # a runPolicy: Always step that failed too
    queue.add(step("deploy", 1))
    assert queue.next().reason == PREVIOUS_STEP_FAILED  # type: ignore[union-attr]

    queue.forget("test")
    assert queue.failed_step == "lint" and queue.stopped
    queue.forget("lint")

    assert not queue.stopped
    assert queue.next().action is Action.RUN  # type: ignore[union-attr]
