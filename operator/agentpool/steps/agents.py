"""The pool layer as the step engine sees it: pool specs, quotas and agent leases.

`PoolAgents` adapts the operator's `PoolManager` and `QuotaRegistry` to the runner's
`AgentSource` protocol, so that runners (and tests with a stand-in pool layer) depend only on
that protocol.
"""

from __future__ import annotations

from agentpool.kube.quota import ApiQuota, QuotaRegistry
from agentpool.model import AgentPoolSpec
from agentpool.pool.lease import AgentLease
from agentpool.pool.manager import PoolManager
from agentpool.steps.context import Lease, Preference

__all__ = ["ACQUIRE_ROUND", "PoolAgents"]

# A build waits for an agent as long as it takes; the manager wants a deadline, so the wait
# is cut into rounds (the runner logs each expired round and waits again).
ACQUIRE_ROUND = 300.0


class PoolAgents:
    """Agents of the operator's pools, leased to builds through the PoolManager."""

    def __init__(self, manager: PoolManager, quotas: QuotaRegistry) -> None:
        self._manager = manager
        self._quotas = quotas

    def pool_spec(self, pool: str) -> AgentPoolSpec | None:
        controller = self._manager.controller(pool)
        return controller.spec if controller is not None else None

    def quota(self, pool: str) -> ApiQuota | None:
        return self._quotas.get(pool)

    async def acquire(
        self, pool: str, build: str, *, within: float | None, prefer: Preference | None = None
    ) -> Lease:
        # PoolGone (the pool was deleted meanwhile) fails the attempt as AgentLost.
        return await self._manager.acquire(
            pool, build, timeout=ACQUIRE_ROUND if within is None else within, prefer=prefer
        )

    async def release(self, lease: Lease, *, delete: bool) -> None:
        if isinstance(lease, AgentLease):
            self._manager.release(lease, delete=delete)

    async def agent_gone(self, pool: str, namespace: str, pod: str) -> str | None:
        return await self._manager.agent_gone(pool, namespace, pod)

    def waiting_builds(self, pool: str) -> int:
        controller = self._manager.controller(pool)
        return controller.waiting_builds() if controller is not None else 0

    def notify(self, pool: str) -> None:
        """The pool's step counts changed: let its status show them."""
        self._manager.notify(pool)
