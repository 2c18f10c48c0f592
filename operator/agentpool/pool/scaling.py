"""Scaling decisions and pool status for one AgentPool (pure).

``plan`` turns a snapshot of the pool (spec numbers, the agents the operator sees, the
builds waiting for an agent) into how many pods to create and which to delete, with a
reason per deletion. The handler carries it out through the pool's API quota.

Rules, in the order they apply (docs/agents.md tells the story):

1. A busy agent (running a step) is never deleted, whatever its state or template. While
   deletions are held (``hold_deletions_until``: the back-off after failed deletes), an agent
   a rule would delete stays and counts as what it is; the rules apply again after the hold.
2. Failed agents are deleted (``Failed``) and lost ones not already being deleted are
   cleaned up (``LostCleanup``); neither counts towards capacity, so they get replaced.
3. ``ephemeral``: an idle agent that has run a build is deleted (``Ephemeral``).
4. Template change (surge roll): agents of an old template that are still starting are
   deleted at once (nobody uses them yet). Old-template idle agents are kept only as long
   as they are needed to hold ``minIdle`` (plus waiting builds) until agents of the new
   template are ready; the rest go now (``TemplateChanged``). When the pool is full and
   no new-template agent is on its way, one old idle agent is deleted per round to make
   room: the roll then goes one at a time, at most one below ``minIdle``.
5. Idle agents above ``minIdle`` + waiting builds are deleted after ``idleTimeout``
   (``IdleTimeout``), old template first, then the longest idle.
6. Above ``maxAgents`` (the spec was lowered) non-busy agents go (``ScaleDown``):
   starting ones first, then idle ones.
7. Creations cover ``minIdle`` + waiting builds with current-template agents (idle,
   starting or being created), capped so that starting + ready + being created never
   exceeds ``maxAgents``, and so that at most ``creation_burst`` pod creations are in
   flight at once (a pool asking for thousands of agents must not spawn thousands of
   requests at once: they would starve every other pool of the operator). While
   ``hold_creations_until`` lies ahead (the back-off after failed creations or launches),
   nothing is created; ``held`` says how many creations wait for it.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from agentpool.model import AgentCounts, Condition, ConditionStatus
from agentpool.pool.readiness import AgentState

# At most this many failed agents are named in the Degraded message.
_FAILURES_NAMED = 3


class DeletionReason(enum.StrEnum):
    IDLE_TIMEOUT = "IdleTimeout"
    FAILED = "Failed"
    # CamelCase like every Event and condition reason (the CRD's reason pattern has no "-").
    LOST_CLEANUP = "LostCleanup"
    TEMPLATE_CHANGED = "TemplateChanged"
    EPHEMERAL = "Ephemeral"
    SCALE_DOWN = "ScaleDown"


@dataclass(frozen=True)
class Agent:
    """What scaling needs to know about one agent pod.

    ``idle_since``: when the agent last became idle (ready and not busy); None is read as
    "just now". ``builds_run``: builds it has finished (ephemeral pools delete it after
    one). ``deleting``: the pod already has a deletionTimestamp. ``reason``/``message``:
    from the readiness classification, quoted in conditions. Vanished pods are simply left
    out of the snapshot.
    """

    name: str
    state: AgentState
    created: datetime
    busy: bool = False
    idle_since: datetime | None = None
    template_hash: str | None = None
    builds_run: int = 0
    deleting: bool = False
    reason: str = ""
    message: str = ""


@dataclass(frozen=True)
class PoolSnapshot:
    """The pool as the operator sees it at one moment.

    ``idle_timeout`` in seconds, None for never. ``pending_creations``: pods requested but
    not yet seen in the pod list (they count towards ``maxAgents``).
    ``hold_creations_until``: no creations before then (the handler's back-off after
    failed creations or repeated launch failures). ``hold_deletions_until``: no deletions
    before then (the back-off after failed deletes). ``creation_burst``: most pod creations
    in flight at once (None: no limit); the rest follow as earlier ones complete.
    """

    min_idle: int
    max_agents: int
    idle_timeout: float | None
    ephemeral: bool
    template_hash: str
    agents: tuple[Agent, ...] = ()
    waiting_builds: int = 0
    pending_creations: int = 0
    hold_creations_until: datetime | None = None
    hold_deletions_until: datetime | None = None
    creation_burst: int | None = None


@dataclass(frozen=True)
class Deletion:
    name: str
    reason: DeletionReason
    message: str


@dataclass(frozen=True)
class ScalingPlan:
    """What to do now. ``next_review``: when a timed rule may fire next (re-plan then).
    ``held``: creations wanted now but held by ``hold_creations_until``."""

    create: int
    deletions: tuple[Deletion, ...]
    create_reason: str
    at_capacity: bool
    next_review: datetime | None
    held: int = 0

    @property
    def deleted_names(self) -> frozenset[str]:
        return frozenset(d.name for d in self.deletions)


def plan(snapshot: PoolSnapshot, now: datetime) -> ScalingPlan:
    """Decide creations and deletions for one pool (see the module docstring)."""
    now = _aware(now)
    s = snapshot
    max_agents = max(0, s.max_agents)
    # minIdle > maxAgents is a spec error reported elsewhere; meanwhile do what fits.
    min_idle = min(max(0, s.min_idle), max_agents)
    waiting = max(0, s.waiting_builds)
    keep_idle = min_idle + waiting
    current = s.template_hash

    deletions: dict[str, Deletion] = {}
    deletion_hold = _aware(s.hold_deletions_until) if s.hold_deletions_until else None
    deletions_held = deletion_hold is not None and deletion_hold > now
    next_review = deletion_hold if deletions_held else None

    def delete(agent: Agent, reason: DeletionReason, message: str) -> None:
        # 1. The one guard every rule goes through: a busy agent is never deleted, and
        # while deletions are held an agent stays what it is (capacity, if it is alive).
        if agent.busy or agent.name in deletions or deletions_held:
            return
        deletions[agent.name] = Deletion(agent.name, reason, message)

    def alive() -> list[Agent]:
        return [
            a
            for a in s.agents
            if a.state in (AgentState.STARTING, AgentState.READY) and a.name not in deletions
        ]

    def idle(agents: Iterable[Agent]) -> list[Agent]:
        return [a for a in agents if a.state is AgentState.READY and not a.busy]

    # 2. Failed and lost.
    for a in s.agents:
        if a.state is AgentState.FAILED:
            delete(a, DeletionReason.FAILED, _why("agent failed", a))
        elif a.state is AgentState.LOST and not a.deleting:
            delete(a, DeletionReason.LOST_CLEANUP, _why("agent lost", a))

    # 3. Ephemeral agents serve one build.
    if s.ephemeral:
        for a in idle(s.agents):
            if a.builds_run > 0:
                delete(a, DeletionReason.EPHEMERAL, "ephemeral agent finished its build")

    # 4. Template roll.
    changed = f"template changed to {current}"
    for a in alive():
        if a.state is AgentState.STARTING and a.template_hash != current:
            delete(a, DeletionReason.TEMPLATE_CHANGED, f"{changed}; agent was still starting")
    idle_now = idle(alive())
    idle_current = [a for a in idle_now if a.template_hash == current]
    idle_old = sorted(
        (a for a in idle_now if a.template_hash != current), key=lambda a: (a.created, a.name)
    )
    keep_old = max(0, keep_idle - len(idle_current))
    # Keep the newest old agents; the oldest go first.
    for a in idle_old[: max(0, len(idle_old) - keep_old)]:
        delete(a, DeletionReason.TEMPLATE_CHANGED, f"{changed}; idle agent replaced")

    # 5. Idle timeout above minIdle + waiting builds.
    if s.idle_timeout is not None:
        timeout = timedelta(seconds=max(0.0, s.idle_timeout))
        remaining = idle(alive())
        expired: list[Agent] = []
        for a in remaining:
            expiry = (_aware(a.idle_since) if a.idle_since else now) + timeout
            if expiry <= now:
                expired.append(a)
            else:
                next_review = _earliest(next_review, expiry)
        expired.sort(key=lambda a: (a.template_hash == current, _idle_key(a, now), a.name))
        surplus = len(remaining) - keep_idle
        for a in expired[: max(0, surplus)]:
            delete(
                a,
                DeletionReason.IDLE_TIMEOUT,
                f"idle for longer than {s.idle_timeout:g}s above minIdle {min_idle}",
            )

    # 6. Above maxAgents.
    over = len(alive()) + s.pending_creations - max_agents
    if over > 0:
        live = alive()
        starting = sorted(
            (a for a in live if a.state is AgentState.STARTING and not a.busy),
            key=lambda a: (a.created, a.name),
            reverse=True,
        )
        idle_live = sorted(
            idle(live), key=lambda a: (a.template_hash == current, _idle_key(a, now), a.name)
        )
        for a in [*starting, *idle_live][:over]:
            delete(a, DeletionReason.SCALE_DOWN, f"pool above maxAgents {max_agents}")

    # 7. Creations.
    live = alive()
    on_the_way = s.pending_creations + sum(
        1 for a in live if a.state is AgentState.STARTING and a.template_hash == current
    )
    kept_old = sorted(
        (a for a in idle(live) if a.template_hash != current), key=lambda a: (a.created, a.name)
    )
    # Old idle agents may serve waiting builds but do not count as warm for minIdle:
    # that is what makes the roll create their replacements.
    supply = (
        on_the_way
        + sum(1 for a in idle(live) if a.template_hash == current)
        + min(len(kept_old), waiting)
    )
    want = max(0, keep_idle - supply)
    room = max(0, max_agents - len(live) - s.pending_creations)
    # While builds wait, kept old agents are about to be used; deleting one would only
    # make a build wait for a fresh agent.
    if want > room and room == 0 and on_the_way == 0 and waiting == 0 and kept_old:
        delete(
            kept_old[0],
            DeletionReason.TEMPLATE_CHANGED,
            f"{changed}; pool full, replacing idle agents one at a time",
        )
        room = max(0, max_agents - len(alive()) - s.pending_creations)
    create = min(want, room)
    at_capacity = want > room
    create_reason = _create_reason(
        create, want, min_idle=min_idle, waiting=waiting, supply=supply, max_agents=max_agents
    )
    if s.creation_burst is not None:
        burst = max(1, s.creation_burst)
        if create > burst - s.pending_creations:
            create = max(0, burst - s.pending_creations)
            create_reason = (
                f"creating {create} of {want} wanted: at most {burst} "
                "agent pod creations at a time; the rest follow as these complete"
            )
    held = 0
    if s.hold_creations_until is not None and _aware(s.hold_creations_until) > now:
        hold = _aware(s.hold_creations_until)
        if create:
            create_reason = f"creations held until {hold.isoformat()}: backing off after failures"
        held, create = create, 0
        next_review = _earliest(next_review, hold)
    return ScalingPlan(
        create=create,
        deletions=tuple(deletions.values()),
        create_reason=create_reason,
        at_capacity=at_capacity,
        next_review=next_review,
        held=held,
    )


def count_agents(agents: Iterable[Agent]) -> AgentCounts:
    """Agents by state for ``status.agents``.

    A ready agent is busy or idle; lost agents (vanished or being deleted) are leaving
    and not counted.
    """
    starting = idle = busy = failed = 0
    for a in agents:
        if a.state is AgentState.STARTING:
            starting += 1
        elif a.state is AgentState.READY:
            busy += a.busy
            idle += not a.busy
        elif a.state is AgentState.FAILED:
            failed += 1
    return AgentCounts(starting=starting, idle=idle, busy=busy, failed=failed)


def pool_conditions(
    agents: Sequence[Agent],
    *,
    min_idle: int,
    max_agents: int,
    spec_errors: Sequence[str] = (),
    problems: Sequence[tuple[str, str]] = (),
    creation_failure: tuple[str, str] | None = None,
    observed_generation: int | None = None,
) -> tuple[Condition, Condition]:
    """The pool's ``Ready`` and ``Degraded`` conditions.

    ``spec_errors``: human messages about an unusable spec. ``problems``: other (reason,
    message) pairs that degrade the pool, e.g. ``ApiQuotaTimeout`` from the step layer.
    ``creation_failure``: (reason, message) while agents the pool needs cannot be created
    (the API server fails or throttles pod creation); the pool is then neither Ready nor
    free of Degraded, whatever agents it still has.
    Write them with ``model.merge_condition`` (it keeps ``lastTransitionTime``).
    """
    if spec_errors:
        text = "; ".join(spec_errors)
        ready = Condition("Ready", ConditionStatus.FALSE, "InvalidSpec", text)
        degraded = Condition("Degraded", ConditionStatus.TRUE, "InvalidSpec", text)
    else:
        warm = min(max(0, min_idle), max(0, max_agents))
        ready = _ready_condition(count_agents(agents), warm, creation_failure)
        causes = [creation_failure, *problems] if creation_failure else problems
        degraded = _degraded_condition(agents, causes)
    return (
        replace(ready, observed_generation=observed_generation),
        replace(degraded, observed_generation=observed_generation),
    )


def _ready_condition(
    counts: AgentCounts, warm: int, creation_failure: tuple[str, str] | None
) -> Condition:
    started = counts.idle + counts.busy
    summary = f"{started} agent(s) ready ({counts.idle} idle, {counts.busy} busy)"
    if counts.starting:
        summary += f", {counts.starting} starting"
    if creation_failure is not None:
        reason, message = creation_failure
        return Condition("Ready", ConditionStatus.FALSE, reason, f"{summary}; {message}")
    if warm == 0:
        return Condition(
            "Ready",
            ConditionStatus.TRUE,
            "OnDemand",
            f"minIdle is 0: agents start when builds wait; {summary}",
        )
    if started >= warm:
        return Condition("Ready", ConditionStatus.TRUE, "AgentsReady", f"{summary}; minIdle {warm}")
    reason = "AgentsStarting" if counts.starting else "AgentsNotReady"
    return Condition(
        "Ready",
        ConditionStatus.FALSE,
        reason,
        f"{started} of {warm} warm agent(s) ready; {summary}",
    )


def _degraded_condition(agents: Sequence[Agent], problems: Sequence[tuple[str, str]]) -> Condition:
    causes: list[tuple[str, str]] = []
    failed = [a for a in agents if a.state is AgentState.FAILED]
    if failed:
        named = "; ".join(
            f"{a.name}: {a.reason or 'Failed'}" + (f": {a.message}" if a.message else "")
            for a in failed[:_FAILURES_NAMED]
        )
        more = len(failed) - _FAILURES_NAMED
        causes.append(
            (
                "AgentsFailed",
                f"{len(failed)} agent(s) failed: {named}"
                + (f" (and {more} more)" if more > 0 else ""),
            )
        )
    unschedulable = [
        a for a in agents if a.state is AgentState.STARTING and a.reason == "Unschedulable"
    ]
    if unschedulable:
        first = unschedulable[0]
        causes.append(
            (
                "AgentsUnschedulable",
                f"{len(unschedulable)} agent(s) cannot be scheduled: {first.message}",
            )
        )
    causes.extend(problems)
    if not causes:
        return Condition("Degraded", ConditionStatus.FALSE, "AsExpected", "no agent is failing")
    return Condition(
        "Degraded", ConditionStatus.TRUE, causes[0][0], "; ".join(text for _, text in causes)
    )


def _create_reason(
    create: int, want: int, *, min_idle: int, waiting: int, supply: int, max_agents: int
) -> str:
    need = f"minIdle {min_idle} + {waiting} waiting build(s), {supply} available or starting"
    if want == 0:
        return f"enough agents: {need}"
    if create < want:
        return f"creating {create} of {want} wanted: maxAgents {max_agents} reached ({need})"
    return f"creating {create}: {need}"


def _why(prefix: str, agent: Agent) -> str:
    detail = ": ".join(p for p in (agent.reason, agent.message) if p)
    return f"{prefix}: {detail}" if detail else prefix


def _idle_key(agent: Agent, now: datetime) -> datetime:
    # Longest idle sorts first; unknown idle time counts as "just became idle".
    return _aware(agent.idle_since) if agent.idle_since else now


def _earliest(a: datetime | None, b: datetime) -> datetime:
    return b if a is None else min(a, b)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
