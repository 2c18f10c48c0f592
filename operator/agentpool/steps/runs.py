"""The operator's view of one BuildStep while it is in the engine's hands: spec, attempt, output."""

from __future__ import annotations

import asyncio
import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from agentpool.model import BuildStepSpec, StepPhase
from agentpool.steps.protocol import StepRequest
from agentpool.steps.scheduling import QueuedStep
from agentpool.timestamps import parse_time


class Attempt(enum.Enum):
    """How far the step's current attempt got: what may still be done with it."""

    # Nothing of it reached an agent: it may start anywhere (its `home` preferred).
    WAITING = "waiting"
    # This operator sent it to `sent_to`: it may run there, so it is never started blindly
    # again, only resumed (its start is idempotent in the container).
    SUBMITTED = "submitted"
    # Found Running at startup: an earlier operator started it on `home`, where it is resumed,
    # leased or not, until the attempt ends.
    RECOVERED = "recovered"


@dataclass(frozen=True)
class AgentRef:
    """Where an attempt was sent: the agent pod and the exec session that carried it."""

    agent: str
    session: str  # the session's nonce


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
    attempt: Attempt = Attempt.WAITING
    # The agent its status names before it runs there: where an earlier operator left it
    # (RECOVERED: running there), or where this one placed it; a crash may have started it.
    home: str | None = None
    sent_to: AgentRef | None = None  # where its latest attempt was submitted
    phase: StepPhase = StepPhase.PENDING  # the phase its status was last given
    started_at: datetime | None = None
    # Loop time this operator first saw the attempt submitted: how long it has run, for
    # detaching a long step from its session (`handover.detach_mid_step`).
    running_since: float | None = None
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
    def submitted(self) -> bool:
        """A run message of the current attempt may have reached an agent: never re-run it
        blindly."""
        return self.attempt is not Attempt.WAITING

    @property
    def agent(self) -> str | None:
        """The agent its latest attempt was sent to."""
        return self.sent_to.agent if self.sent_to is not None else None

    @property
    def recovered_agent(self) -> str | None:
        """The agent an earlier operator started the current attempt on."""
        return self.home if self.attempt is Attempt.RECOVERED else None

    def sent(self, to: AgentRef) -> None:
        """A run message of the attempt leaves for `to` (a recovered attempt stays recovered:
        it is resumed on its home even when the build's lease is elsewhere)."""
        self.sent_to = to
        if self.attempt is Attempt.WAITING:
            self.attempt = Attempt.SUBMITTED

    def next_attempt(self) -> None:
        """The attempt failed and is retried: the new one starts from nothing."""
        self.attempts += 1
        if self.attempt is Attempt.RECOVERED:
            self.home = None  # the agent it ran on failed it: no reason to prefer it
        self.attempt = Attempt.WAITING
        self.offset = 0
        self.tail.clear()
        self.running_since = None

    def rerun(self) -> None:
        """The step (finished, or lost with its agent) runs again in a re-run of its build:
        a new attempt that starts from nothing, pending again, on whatever agent the build
        gets next (the one it ran on is gone). `started_at` stays its first start, as for
        any retry."""
        self.next_attempt()
        self.home = None
        self.sent_to = None
        self.phase = StepPhase.QUEUED

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

    def request(self, workspace: str | None = None) -> StepRequest:
        return StepRequest(
            step_id=self.step_id,
            script=self.spec.script.encode(),
            shell=self.spec.shell,
            env={var.name: var.value for var in self.spec.env},
            working_dir=self.spec.working_dir,
            timeout=max(1, math.ceil(self.spec.timeout)),
            workspace=workspace,
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
            state["home"] = agent
            state["attempt"] = Attempt.RECOVERED
        started = parse_time(status.get("startedAt"))
        if started is not None:
            state["started_at"] = started
        return state
