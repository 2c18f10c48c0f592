"""`agentpool demo`: what counts as "behaved as designed"."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console

from agentpool_sandbox.demo import (
    EXPECT_EXIT_CODE,
    EXPECT_PHASE,
    Outcome,
    StepResult,
    judge,
    summary,
)


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


def details(check_outcome: Outcome) -> dict[str, str]:
    return {c.what: c.detail for c in judge(check_outcome)}


def rendered_checks(check_outcome: Outcome) -> list[str]:
    check_outcome.checks = judge(check_outcome)
    out = io.StringIO()
    Console(file=out, width=200, color_system=None).print(summary(check_outcome))
    lines = out.getvalue().splitlines()
    return [line.rstrip() for line in lines if line.startswith(("  ok  ", " FAIL "))]


def test_a_step_as_designed_states_its_expectation_once() -> None:
    assert rendered_checks(outcome(DESIGNED))[:3] == [
        "  ok  compile is Succeeded (exit 0)",
        "  ok  test is Failed (exit 1)",
        "  ok  publish is Skipped",
    ]


def test_a_step_not_as_designed_shows_what_was_seen() -> None:
    wrong = outcome([*DESIGNED, step("lint", "Failed", 2)])

    assert details(wrong)["lint is Succeeded (exit 0)"] == "got Failed (exit 2)"
    assert " FAIL lint is Succeeded (exit 0)  — got Failed (exit 2)" in rendered_checks(wrong)


def test_an_unconstrained_exit_code_is_shown_as_what_was_seen() -> None:
    failed_any = step("probe", "Failed", 3, **{EXPECT_PHASE: "Failed"})

    assert details(outcome([*DESIGNED, failed_any]))["probe is Failed"] == "got Failed (exit 3)"


def test_the_session_and_quota_checks_keep_their_figures() -> None:
    assert rendered_checks(outcome(DESIGNED))[3:] == [
        "  ok  fewer exec sessions than steps run  — 1 sessions for 2 steps",
        "  ok  peak API connections within the quota  — peak 2, limit 8",
    ]
