"""`agentpool demo`: what counts as "behaved as designed"."""

from __future__ import annotations

from typing import Any

from agentpool.demo import EXPECT_EXIT_CODE, EXPECT_PHASE, Outcome, StepResult, judge


def step(name: str, phase: str, exit_code: int | None, **annotations: str) -> StepResult:
    body: dict[str, Any] = {
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"build": "b", "order": 1},
        "status": {"phase": phase, "exitCode": exit_code},
    }
    return StepResult.from_body(body)


def outcome(steps: list[StepResult], sessions: int = 1, peak: int = 2) -> Outcome:
    return Outcome(
        steps=steps,
        sessions=sessions,
        peak_connections=peak,
        limit=8,
        metrics_url="",
        metrics_sessions=sessions,
        phases_in_metrics={},
    )


def failed(check_outcome: Outcome) -> list[str]:
    return [c.what for c in judge(check_outcome) if not c.ok]


DESIGNED = [
    step("compile", "Succeeded", 0),
    step("test", "Failed", 1, **{EXPECT_PHASE: "Failed", EXPECT_EXIT_CODE: "1"}),
    step("publish", "Skipped", None, **{EXPECT_PHASE: "Skipped"}),
]


def test_the_designed_run_passes() -> None:
    assert failed(outcome(DESIGNED)) == []


def test_an_unannotated_step_must_succeed_with_exit_code_zero() -> None:
    assert failed(outcome([*DESIGNED, step("lint", "Failed", 2)])) == ["lint is Succeeded (exit 0)"]


def test_the_failing_step_must_fail_with_its_exit_code() -> None:
    wrong = step("test", "Failed", 2, **{EXPECT_PHASE: "Failed", EXPECT_EXIT_CODE: "1"})

    assert failed(outcome([DESIGNED[0], wrong, DESIGNED[2]])) == ["test is Failed (exit 1)"]


def test_as_many_sessions_as_steps_fails() -> None:
    assert failed(outcome(DESIGNED, sessions=2)) == ["fewer exec sessions than steps run"]


def test_a_peak_above_the_limit_fails() -> None:
    assert failed(outcome(DESIGNED, peak=9)) == ["peak API connections within the quota"]


def test_a_timeout_fails() -> None:
    late = outcome([*DESIGNED[:2], step("publish", "Queued", None, **{EXPECT_PHASE: "Skipped"})])
    late.timed_out = True

    assert "every step finished" in failed(late)
