"""Which step of a build runs next, which are skipped, and which failures are retried (pure).

A build is the steps sharing `(namespace, spec.build)`. They run one at a time on one agent, in
`spec.order`, then creation time, then name. Once a step of the build failed, later steps are
`Skipped` unless their `runPolicy` is `Always`; a step arriving after the failure gets the same
treatment. No I/O here: the engine feeds events in and acts on the decisions.
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
    failed_step: str | None = None  # the first step of the build that failed
    # The agent the build's latest finished step ran on: its workspace is there.
    agent: str | None = None
    _agent_finished: datetime | None = None

    def ran_on(self, agent: str, finished: datetime | None) -> None:
        """Note the agent of a finished step (the latest finish wins)."""
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

    def record(self, name: str, phase: StepPhase) -> None:
        """Note a step's final phase: a failure decides the fate of the steps after it."""
        self._queued.pop(name, None)
        if phase is StepPhase.FAILED and self.failed_step is None:
            self.failed_step = name

    def next(self) -> Decision | None:
        """The first queued step and whether it runs or is skipped; None when empty.

        The step is not removed: the caller `record()`s its outcome once it is final.
        """
        queued = self.ordered()
        if not queued:
            return None
        return self.decide(queued[0])

    def decide(self, step: QueuedStep) -> Decision:
        if self.failed_step is not None and step.run_policy is not RunPolicy.ALWAYS:
            return Decision(
                step,
                Action.SKIP,
                PREVIOUS_STEP_FAILED,
                f"step {self.failed_step} of build {self.key[1]} failed; this step's runPolicy "
                "is OnSuccess (set runPolicy: Always to run it anyway)",
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
