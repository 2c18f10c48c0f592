"""A finished attempt's result as the step's final phase, reason and message."""

from __future__ import annotations

import pytest

from agentpool.model import BuildStepSpec, StepPhase
from agentpool.steps.outcomes import classify
from agentpool.steps.runs import StepRun
from agentpool.steps.session import StepResult


def run() -> StepRun:
    spec = BuildStepSpec(pool="p", build="b", script="make", shell="/bin/bash", working_dir="w")
    return StepRun("ns", "s", "uid", "ns/p", spec, created="2026-11-24T00:00:00Z")


@pytest.mark.parametrize(
    ("code", "reason", "phase", "step_reason", "says"),
    [
        (0, "exit", StepPhase.SUCCEEDED, "Completed", "exited 0"),
        (3, "exit", StepPhase.FAILED, "ScriptFailed", "exited with code 3"),
        (127, "exit", StepPhase.FAILED, "ScriptFailed", "exited with code 127"),
        (143, "timeout", StepPhase.FAILED, "Timeout", "longer than its timeout of 3600 s"),
        (143, "cancelled", StepPhase.CANCELLED, "Cancelled", "deleted"),
        (127, "shell", StepPhase.FAILED, "ShellNotFound", "no executable shell '/bin/bash'"),
        (126, "workdir", StepPhase.FAILED, "WorkingDirUnavailable", "workingDir 'w'"),
    ],
)
def test_results_become_outcomes(
    code: int, reason: str, phase: StepPhase, step_reason: str, says: str
) -> None:
    outcome = classify(StepResult(code, reason, 0), run())

    assert outcome is not None
    assert (outcome.phase, outcome.reason, outcome.exit_code) == (phase, step_reason, code)
    assert says in outcome.message


def test_setup_failures_say_which_field_to_change() -> None:
    shell = classify(StepResult(127, "shell", 0), run())
    workdir = classify(StepResult(126, "workdir", 0), run())

    assert shell is not None and "set spec.shell" in shell.message
    assert workdir is not None and "set spec.workingDir" in workdir.message


def test_a_vanished_keeper_has_no_outcome() -> None:
    assert classify(StepResult(-1, "lost", 0), run()) is None


def test_a_deleted_step_is_cancelled_whatever_its_exit() -> None:
    deleted = run()
    deleted.deleted.set()

    outcome = classify(StepResult(0, "exit", 0), deleted)

    assert outcome is not None and outcome.phase is StepPhase.CANCELLED
