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
        return Outcome(StepPhase.CANCELLED, "Cancelled", run.cancel_message, result.exit_code)
    failure = _failure(result, run)
    if failure is None:
        return Outcome(StepPhase.SUCCEEDED, "Completed", "the script exited 0", 0)
    reason, message = failure
    return Outcome(StepPhase.FAILED, reason, message, result.exit_code)


def _failure(result: StepResult, run: StepRun) -> tuple[str, str] | None:
    """Reason and message of a failed attempt; None when the step succeeded."""
    spec = run.spec
    if result.reason == "timeout":
        return "Timeout", (
            f"the step ran longer than its timeout of {spec.timeout:g} s and was killed"
        )
    # The launcher could not start the script: the exit code is not the script's.
    if result.reason == "shell":
        return "ShellNotFound", (
            f"the container has no executable shell {spec.shell!r}: set spec.shell to a POSIX "
            "shell the image has, such as /bin/sh"
        )
    if result.reason == "workdir":
        return "WorkingDirUnavailable", (
            f"the script could not create or enter workingDir {spec.working_dir!r} (see the "
            "step's log): set spec.workingDir to a directory the container's user may create "
            "or enter"
        )
    if result.exit_code != 0:
        return "ScriptFailed", f"the script exited with code {result.exit_code}"
    return None
