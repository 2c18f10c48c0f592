"""Which step of a build runs next, which are skipped, and which failures are retried (pure).

A build is the steps sharing `(namespace, spec.build)`. They run one at a time on one agent, in
`spec.order`, then creation time, then name. Once a step of the build failed (or was
cancelled), later steps are `Skipped` unless their `runPolicy` is `Always`; a step arriving
after the failure gets the same treatment. The failure is remembered only while a failed (or
cancelled) step of the build exists: delete those steps and the build runs again under its
name (re-run). No I/O here: the engine feeds events in and acts on the decisions.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from agentpool.model import RunPolicy, StepPhase

BuildKey = tuple[str, str]  # (namespace, spec.build)
StepKey = tuple[str, str]  # (namespace, metadata.name)

PREVIOUS_STEP_FAILED = "PreviousStepFailed"
PREVIOUS_STEP_CANCELLED = "PreviousStepCancelled"


@dataclass(frozen=True)
class QueuedStep:
    """What scheduling needs to know about one step."""

    namespace: str
    name: str
    build: str
    order: int
    created: str  # RFC 3339 creationTimestamp: sorts chronologically as text
    run_policy: RunPolicy = RunPolicy.ON_SUCCESS

    @property
    def key(self) -> StepKey:
        return (self.namespace, self.name)

    @property
    def build_key(self) -> BuildKey:
        return (self.namespace, self.build)

    @property
    def sort_key(self) -> tuple[int, str, str]:
        return (self.order, self.created, self.name)


class Action(enum.StrEnum):
    RUN = "Run"
    SKIP = "Skip"


@dataclass(frozen=True)
class Decision:
    """What to do with the next step of a build."""

    step: QueuedStep
    action: Action
    reason: str = ""
    message: str = ""


@dataclass
class BuildQueue:
    """The steps of one build waiting to run, and what the build's finished steps left behind."""

    key: BuildKey
    _queued: dict[str, QueuedStep] = field(default_factory=dict)
    # Steps of the build that failed or were cancelled and still exist, in the order seen.
    _failed: dict[str, None] = field(default_factory=dict)
    _cancelled: dict[str, None] = field(default_factory=dict)
    # The agent the build's latest finished step ran on: its workspace is there.
    agent: str | None = None
    _agent_finished: datetime | None = None
    # Agents that steps of the build ran on before its current runner: seen in the listing
    # after a restart, or remembered from an earlier runner of the build (it went idle).
    # The runner does not know those steps, so it cannot run them again.
    ran_earlier: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.agent is not None:
            self.ran_earlier.add(self.agent)

    def ran_on(self, agent: str, finished: datetime | None) -> None:
        """Note the agent of a finished step (the latest finish wins)."""
        self.ran_earlier.add(agent)
        latest = self._agent_finished
        if self.agent is None or (finished and (latest is None or finished >= latest)):
            self.agent, self._agent_finished = agent, finished

    def add(self, step: QueuedStep) -> None:
        """Queue a step (again: the latest view wins)."""
        if step.build_key != self.key:
            raise ValueError(f"step {step.name} belongs to build {step.build_key}, not {self.key}")
        self._queued[step.name] = step

    def remove(self, name: str) -> QueuedStep | None:
        return self._queued.pop(name, None)

    def __contains__(self, name: object) -> bool:
        return name in self._queued

    def __len__(self) -> int:
        return len(self._queued)

    def ordered(self) -> list[QueuedStep]:
        return sorted(self._queued.values(), key=lambda step: step.sort_key)

    @property
    def failed_step(self) -> str | None:
        """The first existing step of the build that failed, if any."""
        return next(iter(self._failed), None)

    @property
    def cancelled_step(self) -> str | None:
        """The first existing step of the build that was cancelled, if any."""
        return next(iter(self._cancelled), None)

    @property
    def stopped(self) -> bool:
        """A failure or a cancellation decides the fate of the build's later steps."""
        return bool(self._failed or self._cancelled)

    def record(self, name: str, phase: StepPhase) -> None:
        """Note a step's final phase: a failure or cancellation decides the fate of the steps
        after it."""
        self._queued.pop(name, None)
        if phase is StepPhase.FAILED:
            self._failed[name] = None
        elif phase is StepPhase.CANCELLED:
            self._cancelled[name] = None

    def forget(self, name: str) -> None:
        """The step was deleted: a failure or cancellation of it no longer stops the build."""
        self._queued.pop(name, None)
        self._failed.pop(name, None)
        self._cancelled.pop(name, None)

    def next(self) -> Decision | None:
        """The first queued step and whether it runs or is skipped; None when empty.

        The step is not removed: the caller `record()`s its outcome once it is final.
        """
        queued = self.ordered()
        if not queued:
            return None
        return self.decide(queued[0])

    def decide(self, step: QueuedStep) -> Decision:
        if step.run_policy is RunPolicy.ALWAYS:
            return Decision(step, Action.RUN)
        hint = "this step's runPolicy is OnSuccess (set runPolicy: Always to run it anyway)"
        if self.failed_step is not None:
            return Decision(
                step,
                Action.SKIP,
                PREVIOUS_STEP_FAILED,
                f"step {self.failed_step} of build {self.key[1]} failed; {hint}",
            )
        if self.cancelled_step is not None:
            return Decision(
                step,
                Action.SKIP,
                PREVIOUS_STEP_CANCELLED,
                f"step {self.cancelled_step} of build {self.key[1]} was cancelled; {hint}",
            )
        return Decision(step, Action.RUN)

    def skippable(self) -> list[Decision]:
        """Every queued step the build's failure skips now, in order."""
        return [d for d in map(self.decide, self.ordered()) if d.action is Action.SKIP]


class Failure(enum.StrEnum):
    """Why an attempt to run a step ended without success."""

    SCRIPT = "Script"  # the script exited non-zero: its own verdict, never retried
    TIMEOUT = "Timeout"  # spec.timeout: the script's fault, never retried
    CANCELLED = "Cancelled"
    AGENT_LOST = "AgentLost"
    SESSION_LOST = "SessionLost"  # no recoverable result (the keeper vanished)
    QUOTA_TIMEOUT = "ApiQuotaTimeout"


INFRASTRUCTURE = frozenset({Failure.AGENT_LOST, Failure.SESSION_LOST, Failure.QUOTA_TIMEOUT})


def should_retry(failure: Failure, attempts: int, retries: int) -> bool:
    """Retry infrastructure failures while `attempts` (made so far) is at most `retries`."""
    return failure in INFRASTRUCTURE and attempts <= retries


def build_order(steps: Iterable[QueuedStep]) -> list[QueuedStep]:
    """Steps in the order a build runs them."""
    return sorted(steps, key=lambda step: step.sort_key)
