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
    session: str | None = None
    exit_code: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    log_bytes: int | None = None
    log_tail: str | None = None

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
        if self.agent is not None:
            body["agent"] = None if self.agent is REMOVED else self.agent
        if self.session is not None:
            body["session"] = self.session
        if self.exit_code is not None:
            body["exitCode"] = self.exit_code
        if self.started_at is not None:
            body["startedAt"] = rfc3339(self.started_at)
        if self.finished_at is not None:
            body["finishedAt"] = rfc3339(self.finished_at)
        if self.log_bytes is not None:
            body["logBytes"] = self.log_bytes
        if self.log_tail is not None:
            body["logTail"] = self.log_tail
        return body
