"""The operator's view of one BuildStep while it is in the engine's hands, and its status fields."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from agentpool.model import BuildStepSpec, StepPhase
from agentpool.steps.protocol import StepRequest
from agentpool.steps.scheduling import QueuedStep
from agentpool.timestamps import parse_time


@dataclass(eq=False)
class StepRun:
    """A step accepted by the engine: spec, attempts, output seen so far, cancellation."""

    namespace: str
    name: str
    uid: str
    pool: str  # "namespace/name" of the AgentPool
    spec: BuildStepSpec
    created: str
    generation: int | None = None
    attempts: int = 0  # attempts made, the current one included
    offset: int = 0  # bytes of output already received (status.logBytes)
    tail_limit: int = 4096
    tail: bytearray = field(default_factory=bytearray)
    recovered_agent: str | None = None  # agent of a step found Running at startup
    placed_on: str | None = None  # agent recorded in its status before its first start
    phase: StepPhase = StepPhase.PENDING
    agent: str | None = None
    session: str | None = None
    started_at: datetime | None = None
    # Loop time this operator first saw the attempt submitted: how long it has run, for
    # detaching a long step from its session (`handover.detach_mid_step`).
    running_since: float | None = None
    submitted: bool = False  # a run message may have reached an agent: never re-run blindly
    deleted: asyncio.Event = field(default_factory=asyncio.Event)
    gone: bool = False  # deleted and no longer stored (no finalizer held it): write nothing
    # Why the step was stopped (`deleted` set): deletion, or the cancel annotation.
    cancel_message: str = "the BuildStep was deleted"

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def created_at(self) -> datetime | None:
        return parse_time(self.created)

    @property
    def queued(self) -> QueuedStep:
        return QueuedStep(
            self.namespace,
            self.name,
            self.spec.build,
            self.spec.order,
            self.created,
            self.spec.run_policy,
        )

    @property
    def step_id(self) -> str:
        """The step's directory in the container: one per attempt, so a retry really reruns."""
        return f"{self.uid}.{max(self.attempts, 1)}"

    def request(self) -> StepRequest:
        return StepRequest(
            step_id=self.step_id,
            script=self.spec.script.encode(),
            shell=self.spec.shell,
            env={var.name: var.value for var in self.spec.env},
            working_dir=self.spec.working_dir,
            timeout=max(1, math.ceil(self.spec.timeout)),
        )

    def add_output(self, data: bytes) -> None:
        self.offset += len(data)
        if self.tail_limit:
            self.tail += data[-self.tail_limit :]
            del self.tail[: max(0, len(self.tail) - self.tail_limit)]

    def log_tail(self) -> str:
        return bytes(self.tail).decode("utf-8", errors="replace")

    @classmethod
    def recovered_state(cls, status: Mapping[str, Any]) -> dict[str, Any]:
        """What a previous operator recorded, to resume a Running step where it was."""
        state: dict[str, Any] = {}
        attempts = status.get("attempts")
        if isinstance(attempts, int) and attempts > 0:
            state["attempts"] = attempts
        log_bytes = status.get("logBytes")
        if isinstance(log_bytes, int) and log_bytes > 0:
            state["offset"] = log_bytes
        agent = status.get("agent")
        if status.get("phase") == StepPhase.RUNNING.value and isinstance(agent, str) and agent:
            state["recovered_agent"] = agent
        started = parse_time(status.get("startedAt"))
        if started is not None:
            state["started_at"] = started
        return state
