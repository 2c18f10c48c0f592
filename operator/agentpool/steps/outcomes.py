"""Step outcomes: the final phase of a step and what its status says about it.

Pure: `classify` turns the session's result of an attempt into the step's outcome.
"""

from __future__ import annotations

from dataclasses import dataclass

from agentpool.model import StepPhase
from agentpool.steps.runs import StepRun
from agentpool.steps.session import StepResult

__all__ = ["Outcome", "classify"]


@dataclass(frozen=True)
class Outcome:
    """A step's final phase and what its status says about it."""

    phase: StepPhase
    reason: str
    message: str
    exit_code: int | None = None


def classify(result: StepResult, run: StepRun) -> Outcome | None:
    """The outcome of a finished attempt; None when the keeper vanished (nothing recoverable)."""
    if result.reason == "lost":
        return None
    if result.reason == "cancelled" or run.deleted.is_set():
        return Outcome(
            StepPhase.CANCELLED, "Cancelled", "the BuildStep was deleted", result.exit_code
        )
    if result.reason == "timeout":
        return Outcome(
            StepPhase.FAILED,
            "Timeout",
            f"the step ran longer than its timeout of {run.spec.timeout:g} s and was killed",
            result.exit_code,
        )
    if result.reason == "shell":
        return Outcome(
            StepPhase.FAILED,
            "ShellNotFound",
            f"the container has no executable shell {run.spec.shell!r}: set spec.shell to a "
            f"POSIX shell the image has, such as /bin/sh",
            result.exit_code,
        )
    if result.reason == "workdir":
        return Outcome(
            StepPhase.FAILED,
            "WorkingDirUnavailable",
            f"the script could not create or enter workingDir {run.spec.working_dir!r} "
            "(see the step's log): set spec.workingDir to a directory the container's user "
            "may create or enter",
            result.exit_code,
        )
    if result.exit_code == 0:
        return Outcome(StepPhase.SUCCEEDED, "Completed", "the script exited 0", 0)
    return Outcome(
        StepPhase.FAILED,
        "ScriptFailed",
        f"the script exited with code {result.exit_code}",
        result.exit_code,
    )
