"""The operator's view of one pool's agent pods, rebuilt from what the API server reports.

Pods arrive from two sources that race: the watch (kopf events) and the controller's own
list and create responses. `PodView` keeps the newest version of each pod (by
resourceVersion) and remembers deletions for a while, so a stale copy never brings a
deleted pod back. `AgentRecord` holds what the pod itself cannot say: when the operator
saw it start, whether a build holds it, how many builds it ran. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from agentpool.pool.lease import AgentLease
from agentpool.pool.readiness import AgentStatus
from agentpool.pool.scaling import DeletionReason

__all__ = ["AgentRecord", "PodView", "gone_reason", "resource_version"]

# Long enough for any stale list response or late watch event to have arrived.
TOMBSTONE_TTL = timedelta(minutes=5)


def resource_version(pod: Mapping[str, Any]) -> int | None:
    """The pod's resourceVersion as a number, None when absent or opaque."""
    value = (pod.get("metadata") or {}).get("resourceVersion")
    if value is None:
        return None
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


def gone_reason(pod: Mapping[str, Any] | None) -> str | None:
    """Why `pod` (as read from the API server; None: 404) can no longer run steps, or None
    while it can. Only this confirms an agent lost: an exec refused or throttled does not."""
    if pod is None:
        return "PodVanished: the agent pod no longer exists"
    meta = pod.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return "PodDeleting: the agent pod is being deleted"
    phase = (pod.get("status") or {}).get("phase")
    if phase in ("Succeeded", "Failed"):
        return f"PodTerminated: the agent pod's phase is {phase}"
    return None


def _newer(candidate: Mapping[str, Any], current: Mapping[str, Any]) -> bool:
    new, old = resource_version(candidate), resource_version(current)
    # Kubernetes calls resourceVersion opaque; when it is not a number, trust arrival order.
    return new is None or old is None or new >= old


class PodView:
    """Newest known version of each agent pod of one pool, by pod name."""

    def __init__(self) -> None:
        self._pods: dict[str, dict[str, Any]] = {}
        self._tombstones: dict[str, tuple[int | None, datetime]] = {}

    def observe(self, pod: Mapping[str, Any], now: datetime) -> bool:
        """Take a pod from a watch event, a list or a create; True when the view changed."""
        name = str((pod.get("metadata") or {}).get("name", ""))
        if not name:
            return False
        tomb = self._tombstones.get(name)
        if tomb is not None:
            deleted_at_rv = tomb[0]
            rv = resource_version(pod)
            # Pod names from generateName are not reused in practice, but a same-named pod
            # created after the deletion has a higher resourceVersion and is a new pod.
            if deleted_at_rv is None or rv is None or rv <= deleted_at_rv:
                return False
            del self._tombstones[name]
        current = self._pods.get(name)
        if current is not None and not _newer(pod, current):
            return False
        self._pods[name] = dict(pod)
        return True

    def forget(self, name: str, now: datetime, pod: Mapping[str, Any] | None = None) -> bool:
        """The pod is gone (DELETED event or 404); True when it was in the view."""
        rv = resource_version(pod) if pod is not None else None
        known = self._pods.pop(name, None)
        if rv is None and known is not None:
            rv = resource_version(known)
        self._tombstones[name] = (rv, now)
        self._expire(now)
        return known is not None

    def get(self, name: str) -> dict[str, Any] | None:
        return self._pods.get(name)

    def names(self) -> list[str]:
        return sorted(self._pods)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(list(self._pods.values()))

    def __len__(self) -> int:
        return len(self._pods)

    def __contains__(self, name: object) -> bool:
        return name in self._pods

    def _expire(self, now: datetime) -> None:
        for name, (_, when) in list(self._tombstones.items()):
            if now - when > TOMBSTONE_TTL:
                del self._tombstones[name]


@dataclass
class AgentRecord:
    """What the operator remembers about one agent beyond its pod."""

    name: str
    first_seen: datetime
    status: AgentStatus | None = None
    ready_at: datetime | None = None
    idle_since: datetime | None = None
    builds_run: int = 0
    lease: AgentLease | None = None
    # Set once the operator asked for the deletion, so the pod's disappearance is expected.
    deleting: DeletionReason | None = None
    failure_reported: bool = False
    # A launch proves itself by staying ready for a while (a crash-looping agent starts,
    # then dies); only then does it end a streak of launch failures.
    proven: bool = False

    @property
    def busy(self) -> bool:
        return self.lease is not None
