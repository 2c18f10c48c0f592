"""What build runners share and depend on: the pool layer as a protocol, clients, settings."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from agentpool.kube.exec import ExecApiClient
from agentpool.kube.quota import ApiQuota
from agentpool.metrics import Catalogue
from agentpool.model import AgentPoolSpec
from agentpool.steps.outcomes import Outcome
from agentpool.steps.runs import StepRun
from agentpool.steps.step_status import StepStatus

__all__ = ["AgentSource", "Lease", "Preference", "RunnerContext"]


# Asked whenever the pool assigns agents: the agent a build would rather have, if any.
Preference = Callable[[], str | None]


class Lease(Protocol):
    """The part of the pool layer's AgentLease a build needs."""

    namespace: str
    pod_name: str
    lost: asyncio.Event
    lost_reason: str


@dataclass(frozen=True, slots=True)
class Leftover:
    """A finished step whose files (output, exit code) are still on an agent: small, since a
    restarted operator keeps one for every finished step it lists until a session goes there."""

    namespace: str
    name: str
    step_id: str  # its directory in the container

    @classmethod
    def of(cls, run: StepRun) -> Leftover:
        return cls(run.namespace, run.name, run.step_id)


class AgentSource(Protocol):
    """Pools and their agents, as the pool layer offers them."""

    def pool_spec(self, pool: str) -> AgentPoolSpec | None: ...
    def quota(self, pool: str) -> ApiQuota | None: ...
    async def acquire(
        self, pool: str, build: str, *, within: float | None, prefer: Preference | None = None
    ) -> Lease:
        """Lease an agent to `build` (raise TimeoutError after `within` seconds; None: wait as
        long as it takes); `prefer` names the agent the build ran on before."""

    async def release(self, lease: Lease, *, delete: bool) -> None: ...
    async def agent_gone(self, pool: str, namespace: str, pod: str) -> str | None:
        """Why `pod` is lost (deleted, being deleted, terminal), confirmed from the API server;
        None while it is alive or the server cannot tell."""

    def notify(self, pool: str) -> None:
        """The pool's queued/running step counts changed."""

    def waiting_builds(self, pool: str) -> int:
        """How many builds wait for an agent of `pool`."""


# Files of at most this many steps per container wait for a next session; more go with the
# agent (a bounded memory for agents that are never used again).
LEFTOVERS_PER_CONTAINER = 1000


async def _nothing() -> None:
    return None


@dataclass
class RunnerContext:
    """What every build runner shares: clients, settings, the writer and the metrics."""

    exec_api: ExecApiClient | None
    agents: AgentSource
    write: Callable[[StepRun, StepStatus, float], None]  # (run, status update, delay)
    finished: Callable[[StepRun, Outcome], None]
    metrics: Catalogue
    batching: bool = True
    build_grace: float = 1.0
    # Once others wait for the quota, a session keeps its slot this long (Config.session_hold).
    session_hold: float = 0.2
    tail_bytes: int = 4096
    # The agent containers' state dir (their own AGENTPOOL_STATE_DIR wins); None: the default.
    state_dir: str | None = None
    event: Callable[[StepRun, str, str], None] = lambda run, reason, message: None
    # Until the step's status updates so far are written (the placement before a first start).
    written: Callable[[StepRun], Awaitable[None]] = field(default=lambda run: _nothing())
    # Whether every status update of the step (namespace, name) is written (its agent-side
    # files may go then).
    settled: Callable[[str, str], bool] = lambda namespace, name: False
    # A finished step runs again (its build is re-run after a lost agent): the engine routes
    # its events to its runner again and no longer keeps it for retention.
    reopened: Callable[[StepRun], None] = lambda run: None
    # Finished steps whose files are still on (pod, container), for the next session there.
    # Container "": the pool's agent container (a step that named none, seen after a restart).
    leftovers: dict[tuple[str, str], list[Leftover]] = field(default_factory=dict)
    pools_changed: asyncio.Event = field(default_factory=asyncio.Event)

    def leave(self, pod: str, container: str, step: Leftover) -> None:
        """Leave the step's files to the next session into `container` of `pod`."""
        left = self.leftovers.setdefault((pod, container), [])
        if len(left) < LEFTOVERS_PER_CONTAINER:
            left.append(step)

    # Tests replace how an exec stream is opened (e.g. to count or fail connections).
    open_stream: Callable[[str, str, str], Awaitable[Any]] | None = None
