"""Readiness classification: from one pod object to the state of its agent (pure).

The rule that matters (see docs/agents.md and the JENKINS-68649 seed): with
``tolerate_virtual_kubelet_pending`` an agent has started once every container is running
(and ready where it has a readiness probe), whatever the pod phase except the terminal
ones. Virtual kubelets (Azure ACI) report all containers running while the phase still
says ``Pending``; demanding ``Running`` there killed 14 of 15 Jenkins agents.

Clocks: the classifier only has the pod, so every duration is measured from timestamps
the API server or kubelet wrote into it:

- startup timeout: from ``metadata.creationTimestamp``, or from the ``ContainersReady``
  condition's last transition when that is later and the containers are all running (an
  agent whose readiness probe starts failing after it was ready gets a fresh window
  instead of being failed at once for being old);
- image pull grace: from ``status.startTime`` (when the kubelet accepted the pod and began
  pulling), else ``creationTimestamp``. The first ``ErrImagePull`` comes after that, so
  the grace is slightly shorter than "since the first error"; it never fails earlier
  than ``image_pull_grace`` after the pull could have begun;
- ``Unknown`` phase: from the ``Ready`` condition's last transition when it is not
  ``True`` (the node controller flips it when the node goes silent). Without such a
  timestamp an ``Unknown`` pod is never declared lost by the classifier alone.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from agentpool.timestamps import parse_time

# Waiting reasons that no amount of waiting fixes.
FATAL_WAITING_REASONS = frozenset(
    {"CrashLoopBackOff", "InvalidImageName", "CreateContainerConfigError", "ErrImageNeverPull"}
)
# Waiting reasons that registry outages cause: fatal only after the grace period.
PULL_WAITING_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff"})

TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})


class AgentState(enum.StrEnum):
    STARTING = "Starting"
    READY = "Ready"
    FAILED = "Failed"
    LOST = "Lost"


@dataclass(frozen=True)
class AgentStatus:
    """The verdict on one agent pod.

    ``reason`` is a CamelCase word fit for an Event or condition (often the container's
    own waiting reason); ``message`` is for humans. ``waiting_on`` says what a not-yet
    started agent waits for, e.g. ``"containers not running: jnlp (ContainerCreating)"``.
    ``virtual_kubelet_pending`` is True when the agent was accepted while the pod phase
    was still ``Pending`` with every container running (the metric counts these).
    """

    state: AgentState
    reason: str
    message: str
    waiting_on: str | None = None
    virtual_kubelet_pending: bool = False


def classify(
    pod: Mapping[str, Any] | None,
    *,
    tolerate_virtual_kubelet_pending: bool,
    agent_container: str | None,
    startup_timeout: float,
    image_pull_grace: float,
    now: datetime,
    unknown_grace: float | None = None,
) -> AgentStatus:
    """Classify one agent pod; ``pod=None`` means it vanished (Lost).

    ``agent_container`` names the container that runs steps: it must exist in the pod
    spec and is listed first in what the agent waits for. ``unknown_grace`` (seconds,
    default ``startup_timeout``) bounds how long an ``Unknown`` phase is tolerated.
    """
    if pod is None:
        return AgentStatus(AgentState.LOST, "PodVanished", "the agent pod no longer exists")
    now = _aware(now)
    meta: Mapping[str, Any] = pod.get("metadata") or {}
    spec: Mapping[str, Any] = pod.get("spec") or {}
    status: Mapping[str, Any] = pod.get("status") or {}
    phase = str(status.get("phase") or "Pending")

    if meta.get("deletionTimestamp"):
        return AgentStatus(
            AgentState.LOST,
            "PodDeleting",
            f"the agent pod is being deleted (since {meta['deletionTimestamp']})",
        )

    spec_containers: list[Mapping[str, Any]] = list(spec.get("containers") or [])
    names = [str(c.get("name")) for c in spec_containers]
    if agent_container is not None and agent_container not in names:
        return AgentStatus(
            AgentState.FAILED,
            "AgentContainerMissing",
            f"agent container {agent_container!r} is not in the pod (containers: "
            f"{', '.join(names) or 'none'})",
        )

    statuses = {str(s.get("name")): s for s in status.get("containerStatuses") or []}
    init_statuses = list(status.get("initContainerStatuses") or [])

    if phase in TERMINAL_PHASES:
        return _terminal(phase, status, statuses)

    ordered = _agent_first(names, agent_container)
    terminated = _first_terminated(ordered, statuses, init_statuses)
    if terminated is not None:
        return terminated

    fatal = _first_waiting(ordered, statuses, init_statuses, FATAL_WAITING_REASONS)
    if fatal is not None:
        name, reason, message = fatal
        return AgentStatus(
            AgentState.FAILED, reason, _container_message(name, reason, message), None
        )

    pull = _first_waiting(ordered, statuses, init_statuses, PULL_WAITING_REASONS)
    if pull is not None:
        name, reason, message = pull
        pull_start = parse_time(status.get("startTime")) or parse_time(
            meta.get("creationTimestamp")
        )
        waited = _seconds_since(pull_start, now)
        text = _container_message(name, reason, message)
        if waited >= image_pull_grace:
            return AgentStatus(
                AgentState.FAILED,
                reason,
                f"{text} (still failing {waited:.0f}s after the pull began, grace "
                f"{image_pull_grace:g}s)",
            )
        waiting_on = f"image pull of container {name} ({reason})"
        if _seconds_since(parse_time(meta.get("creationTimestamp")), now) >= startup_timeout:
            # A grace longer than the startup timeout must not keep a pod forever.
            return AgentStatus(
                AgentState.FAILED,
                "StartupTimeout",
                f"not started after {startup_timeout:g}s: {waiting_on}; {text}",
                waiting_on,
            )
        return AgentStatus(AgentState.STARTING, reason, text, waiting_on)

    specs_by_name = {str(c.get("name")): c for c in spec_containers}
    not_running, not_ready = _unstarted(ordered, specs_by_name, statuses)
    containers_started = bool(ordered) and not not_running and not not_ready

    if phase == "Unknown":
        return _unknown(status, containers_started, now, unknown_grace or startup_timeout)

    if containers_started:
        if phase == "Running":
            return AgentStatus(AgentState.READY, "Started", "all containers are running")
        if tolerate_virtual_kubelet_pending:
            return AgentStatus(
                AgentState.READY,
                "StartedWhilePending",
                f"all containers are running while the pod phase is still {phase} "
                "(virtual kubelet); accepted",
                virtual_kubelet_pending=True,
            )
        # The old behaviour, kept for comparison: the Jenkins plugin gave up on the pod
        # the moment its containers ran while the phase was not yet Running.
        return AgentStatus(
            AgentState.FAILED,
            "PodNotRunning",
            f"all containers are running but the pod phase is {phase}; phase Running is "
            "required (tolerateVirtualKubeletPending off)",
        )

    waiting_on, reason, message = _what_is_missing(
        ordered,
        not_running=not_running,
        not_ready=not_ready,
        statuses=statuses,
        init_statuses=init_statuses,
        status=status,
    )
    started_clock = parse_time(meta.get("creationTimestamp"))
    if not not_running:
        started_clock = _later(started_clock, _condition_time(status, "ContainersReady"))
    waited = _seconds_since(started_clock, now)
    if waited >= startup_timeout:
        return AgentStatus(
            AgentState.FAILED,
            "StartupTimeout",
            f"not started after {startup_timeout:g}s: {waiting_on}"
            + (f"; {reason}: {message}" if reason == "Unschedulable" else ""),
            waiting_on,
        )
    return AgentStatus(AgentState.STARTING, reason, message, waiting_on)


def _terminal(
    phase: str, status: Mapping[str, Any], statuses: Mapping[str, Mapping[str, Any]]
) -> AgentStatus:
    ended = "; ".join(
        _terminated_text(name, term)
        for name, s in statuses.items()
        if (term := (s.get("state") or {}).get("terminated")) is not None
    )
    detail = str(status.get("message") or "")
    parts = [p for p in (detail, ended) if p]
    if phase == "Succeeded":
        return AgentStatus(
            AgentState.FAILED,
            "PodSucceeded",
            "the agent pod exited" + (f": {'; '.join(parts)}" if parts else ""),
        )
    return AgentStatus(
        AgentState.FAILED,
        str(status.get("reason") or "PodFailed"),
        "the agent pod failed" + (f": {'; '.join(parts)}" if parts else ""),
    )


def _unknown(
    status: Mapping[str, Any], containers_started: bool, now: datetime, grace: float
) -> AgentStatus:
    ready = _condition(status, "Ready")
    since = None
    if ready is not None and ready.get("status") != "True":
        since = parse_time(ready.get("lastTransitionTime"))
    if since is not None and _seconds_since(since, now) >= grace:
        return AgentStatus(
            AgentState.LOST,
            "NodeLost",
            f"pod phase Unknown for {_seconds_since(since, now):.0f}s (grace {grace:g}s): "
            "its node stopped reporting",
        )
    message = "pod phase Unknown: its node is not reporting"
    if containers_started:
        return AgentStatus(AgentState.READY, "NodeUnreachable", message)
    return AgentStatus(AgentState.STARTING, "NodeUnreachable", message, "node to report")


def _first_terminated(
    ordered: Sequence[str],
    statuses: Mapping[str, Mapping[str, Any]],
    init_statuses: Sequence[Mapping[str, Any]],
) -> AgentStatus | None:
    for s in init_statuses:
        term = (s.get("state") or {}).get("terminated")
        # Init containers are meant to terminate; only a failed one is fatal.
        if term is not None and term.get("exitCode", 0) != 0:
            return AgentStatus(
                AgentState.FAILED,
                "InitContainerFailed",
                _terminated_text(str(s.get("name")), term),
            )
    for name in ordered:
        term = ((statuses.get(name) or {}).get("state") or {}).get("terminated")
        if term is not None:
            return AgentStatus(
                AgentState.FAILED, "ContainerTerminated", _terminated_text(name, term)
            )
    return None


def _first_waiting(
    ordered: Sequence[str],
    statuses: Mapping[str, Mapping[str, Any]],
    init_statuses: Sequence[Mapping[str, Any]],
    reasons: frozenset[str],
) -> tuple[str, str, str] | None:
    candidates: Iterable[tuple[str, Mapping[str, Any]]] = [
        *((str(s.get("name")), s) for s in init_statuses),
        *((name, statuses[name]) for name in ordered if name in statuses),
    ]
    for name, s in candidates:
        waiting = (s.get("state") or {}).get("waiting")
        if waiting is not None and waiting.get("reason") in reasons:
            return name, str(waiting["reason"]), str(waiting.get("message") or "")
    return None


def _unstarted(
    ordered: Sequence[str],
    specs: Mapping[str, Mapping[str, Any]],
    statuses: Mapping[str, Mapping[str, Any]],
) -> tuple[list[str], list[str]]:
    not_running: list[str] = []
    not_ready: list[str] = []
    for name in ordered:
        s = statuses.get(name)
        if s is None or "running" not in (s.get("state") or {}):
            not_running.append(name)
        elif specs[name].get("readinessProbe") and s.get("ready") is not True:
            not_ready.append(name)
    return not_running, not_ready


def _what_is_missing(
    ordered: Sequence[str],
    *,
    not_running: Sequence[str],
    not_ready: Sequence[str],
    statuses: Mapping[str, Mapping[str, Any]],
    init_statuses: Sequence[Mapping[str, Any]],
    status: Mapping[str, Any],
) -> tuple[str, str, str]:
    """(waiting_on, reason, message) for an agent that has not started yet."""
    scheduled = _condition(status, "PodScheduled")
    if scheduled is not None and scheduled.get("status") == "False":
        reason = str(scheduled.get("reason") or "Unschedulable")
        message = str(scheduled.get("message") or "the scheduler found no node")
        return "a node (pod not scheduled)", reason, message
    if not ordered:
        return "containers (the pod has none)", "NoContainers", "the pod spec has no containers"
    if not_running:
        pending_init = [
            f"{s.get('name')} ({_state_word(s)})"
            for s in init_statuses
            if "terminated" not in (s.get("state") or {})
        ]
        parts = [f"{name} ({_state_word(statuses.get(name))})" for name in not_running]
        waiting_on = "containers not running: " + ", ".join(parts)
        if pending_init:
            waiting_on = "init containers not done: " + ", ".join(pending_init)
        first = statuses.get(not_running[0]) or {}
        waiting = (first.get("state") or {}).get("waiting") or {}
        reason = str(waiting.get("reason") or "ContainersNotRunning")
        message = str(waiting.get("message") or "") or waiting_on
        return waiting_on, reason, message
    waiting_on = "containers not ready: " + ", ".join(
        f"{name} (readiness probe)" for name in not_ready
    )
    return waiting_on, "ContainersNotReady", waiting_on


def _state_word(s: Mapping[str, Any] | None) -> str:
    if s is None:
        return "no status yet"
    state = s.get("state") or {}
    if "waiting" in state:
        return str((state["waiting"] or {}).get("reason") or "Waiting")
    if "terminated" in state:
        return str((state["terminated"] or {}).get("reason") or "Terminated")
    if "running" in state:
        return "Running"
    return "unknown state"


def _terminated_text(name: str, term: Mapping[str, Any]) -> str:
    reason = term.get("reason") or "Terminated"
    text = f"container {name} terminated: {reason} (exit code {term.get('exitCode', '?')})"
    if term.get("message"):
        text += f": {term['message']}"
    return text


def _container_message(name: str, reason: str, message: str) -> str:
    return f"container {name}: {reason}" + (f": {message}" if message else "")


def _agent_first(names: Sequence[str], agent_container: str | None) -> list[str]:
    if agent_container is None or agent_container not in names:
        return list(names)
    return [agent_container, *(n for n in names if n != agent_container)]


def _condition(status: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for condition in status.get("conditions") or []:
        if condition.get("type") == kind:
            return condition  # type: ignore[no-any-return]
    return None


def _condition_time(status: Mapping[str, Any], kind: str) -> datetime | None:
    condition = _condition(status, kind)
    return parse_time(condition.get("lastTransitionTime")) if condition else None


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _later(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None or b is None:
        return a or b
    return max(a, b)


def _seconds_since(moment: datetime | None, now: datetime) -> float:
    # No timestamp at all: treat as just created rather than fail a pod on missing data.
    if moment is None:
        return 0.0
    return max(0.0, (now - moment).total_seconds())
