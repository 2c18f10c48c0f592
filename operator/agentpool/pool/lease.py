"""Agent leases: a build's claim on one started agent of a pool."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from agentpool.kube.quota import ApiQuota
from agentpool.model import AgentPoolSpec

__all__ = ["AgentLease", "LeaseTimeout", "PoolGone"]


@dataclass(eq=False)
class AgentLease:
    """One agent handed to one build until `PoolManager.release`.

    `lost` is set when the agent becomes Lost or Failed while leased (its pod vanished,
    was deleted from outside, or its container died): the step layer then retries the
    build's unfinished steps on another agent. `lost_reason` says why.
    """

    pool_key: str
    build_key: str
    namespace: str
    pod_name: str
    container: str
    spec: AgentPoolSpec
    quota: ApiQuota
    lost: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    lost_reason: str = ""
    released: bool = False

    def mark_lost(self, reason: str) -> None:
        if not self.lost.is_set():
            self.lost_reason = reason
            self.lost.set()


class LeaseTimeout(TimeoutError):
    """No agent of the pool became free in time; the message says what the pool looks like."""


class PoolGone(Exception):
    """The pool was deleted while a build waited for one of its agents."""
