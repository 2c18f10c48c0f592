"""A BuildStep status update, typed: the fields of one merge-patch of its status subresource.

Every status the operator writes for a BuildStep is a `StepStatus`; `patch()` gives the body.
A field left None is not in the patch (the server keeps its value); `REMOVED` writes `null`,
which a merge-patch reads as "delete this field".
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from agentpool.model import StepPhase
from agentpool.steps.runs import AgentRef
from agentpool.timestamps import rfc3339

__all__ = ["REMOVED", "Removed", "StepStatus"]


class Removed(enum.Enum):
    """A field to delete from the stored status."""

    REMOVED = "removed"


REMOVED = Removed.REMOVED


@dataclass(frozen=True)
class StepStatus:
    """Status fields of one BuildStep update (names as in crds/buildsteps.yaml, snake_case)."""

    phase: StepPhase | None = None
    build: str | None = None
    reason: str | None = None
    message: str | None = None
    attempts: int | None = None
    observed_generation: int | None = None
    agent: str | Removed | None = None
    session: str | Removed | None = None
    exit_code: int | Removed | None = None
    started_at: datetime | None = None
    finished_at: datetime | Removed | None = None
    log_bytes: int | Removed | None = None
    log_tail: str | Removed | None = None

    @classmethod
    def queued(cls, message: str) -> StepStatus:
        return cls(phase=StepPhase.QUEUED, reason="Queued", message=message)

    @classmethod
    def running(cls, on: AgentRef) -> StepStatus:
        return cls(
            phase=StepPhase.RUNNING,
            reason="Started",
            message=f"running on agent {on.agent}",
            agent=on.agent,
            session=on.session,
        )

    @classmethod
    def rerun(cls, reason: str, message: str) -> StepStatus:
        """Pending again as a new attempt of a re-run build: what the earlier attempt left
        (its agent and session, exit code, output, end) no longer describes the step, and a
        new attempt may end without rewriting each of them (an exit code, say)."""
        return cls(
            phase=StepPhase.QUEUED,
            reason=reason,
            message=message,
            agent=REMOVED,
            session=REMOVED,
            exit_code=REMOVED,
            finished_at=REMOVED,
            log_bytes=REMOVED,
            log_tail=REMOVED,
        )

    def counted(self, attempts: int, generation: int | None) -> StepStatus:
        """The same update, saying which attempt and which spec generation it is about."""
        return replace(self, attempts=attempts, observed_generation=generation)

    def patch(self) -> dict[str, Any]:
        """The merge-patch body of the status subresource."""
        body: dict[str, Any] = {}
        if self.attempts is not None:
            body["attempts"] = self.attempts
        if self.observed_generation is not None:
            body["observedGeneration"] = self.observed_generation
        if self.phase is not None:
            body["phase"] = self.phase.value
        if self.build is not None:
            body["build"] = self.build
        if self.reason is not None:
            body["reason"] = self.reason
        if self.message is not None:
            body["message"] = self.message
        _put(body, "agent", self.agent)
        _put(body, "session", self.session)
        _put(body, "exitCode", self.exit_code)
        if self.started_at is not None:
            body["startedAt"] = rfc3339(self.started_at)
        finished = self.finished_at
        _put(body, "finishedAt", rfc3339(finished) if isinstance(finished, datetime) else finished)
        _put(body, "logBytes", self.log_bytes)
        _put(body, "logTail", self.log_tail)
        return body


def _put(body: dict[str, Any], key: str, value: object) -> None:
    """A field set (its value), deleted (`REMOVED`: null in a merge-patch) or left (None)."""
    if value is not None:
        body[key] = None if value is REMOVED else value
