"""The pool manager: one `PoolController` per AgentPool, fed by watch events.

Builds lease started agents with `PoolManager.acquire` / `release`; the manager routes them
to the pool's controller, waiting for a pool that does not exist yet.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes_asyncio.client import ApiClient

from agentpool.kube import client as kube
from agentpool.kube.events import EventRecorder
from agentpool.kube.quota import QuotaRegistry
from agentpool.metrics import METRICS, Catalogue
from agentpool.model import StepCounts
from agentpool.pool import agents, manifest
from agentpool.pool.controller import PoolController
from agentpool.pool.lease import AgentLease, LeaseTimeout
from agentpool.pool.settings import ControllerSettings

__all__ = ["PoolManager", "StepCounter"]

StepCounter = Callable[[str], StepCounts]

_log = logging.getLogger(__name__)


class PoolManager:
    """One PoolController per AgentPool (`namespace/name`), fed by watch events."""

    def __init__(
        self,
        api: ApiClient,
        quotas: QuotaRegistry,
        events: EventRecorder,
        *,
        settings: ControllerSettings | None = None,
        metrics: Catalogue = METRICS,
    ) -> None:
        self._api = api
        self._quotas = quotas
        self._events = events
        self._settings = settings or ControllerSettings()
        self._metrics = metrics
        self._controllers: dict[str, PoolController] = {}
        self._appeared = asyncio.Event()
        self._problems: dict[str, dict[str, str]] = {}
        # The step engine registers how many steps of a pool are queued and running.
        self.step_counter: StepCounter | None = None

    # --- watch input ---------------------------------------------------------------------

    async def on_pool_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata") or {}
        key = f"{meta.get('namespace')}/{meta.get('name')}"
        controller = self._controllers.get(key)
        if event_type == "DELETED":
            if controller is not None and controller.uid == meta.get("uid"):
                await self._remove(key)
            return
        if controller is not None and controller.uid != meta.get("uid"):
            # Deleted and re-created under the same name: the old agents are not its own.
            await self._remove(key)
            controller = None
        if controller is None:
            controller = PoolController(
                key,
                body,
                api=self._api,
                quotas=self._quotas,
                events=self._events,
                settings=self._settings,
                metrics=self._metrics,
                step_counts=lambda: self._steps(key),
                problems=lambda: list(self._problems.get(key, {}).items()),
            )
            self._controllers[key] = controller
            controller.start()
            self._appeared.set()
            self._appeared = asyncio.Event()
        else:
            controller.update(body)

    def on_pod_event(self, event_type: str | None, pod: Mapping[str, Any]) -> None:
        meta = pod.get("metadata") or {}
        pool = (meta.get("labels") or {}).get(manifest.POOL_LABEL)
        controller = self._controllers.get(f"{meta.get('namespace')}/{pool}")
        if controller is not None:
            controller.observe_pod(event_type, pod)

    async def _remove(self, key: str) -> None:
        controller = self._controllers.pop(key, None)
        if controller is not None:
            await controller.stop()
        self._problems.pop(key, None)
        self._quotas.remove(key)

    # --- for the step engine -------------------------------------------------------------

    def controller(self, pool_key: str) -> PoolController | None:
        return self._controllers.get(pool_key)

    def pools(self) -> list[str]:
        return sorted(self._controllers)

    # The deadline is part of the contract: the step engine reports it in the step's status.
    async def acquire(
        self,
        pool_key: str,
        build_key: str,
        *,
        timeout: float,  # noqa: ASYNC109
        prefer: Callable[[], str | None] | None = None,
    ) -> AgentLease:
        """Lease a started idle agent of the pool to a build; waits FIFO, scales the pool up.
        `prefer` names the agent the build ran on before (see `pool.assignment`)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (controller := self._controllers.get(pool_key)) is None:
            appeared = self._appeared
            try:
                async with asyncio.timeout_at(deadline):
                    await appeared.wait()
            except TimeoutError:
                raise LeaseTimeout(
                    f"pool {pool_key} does not exist (waited {timeout:g}s for it)"
                ) from None
        return await controller.acquire(
            build_key, timeout=max(0.0, deadline - loop.time()), prefer=prefer
        )

    async def agent_gone(self, pool_key: str, namespace: str, pod: str) -> str | None:
        """Why the agent `pod` is lost, confirmed by reading the pod from the API server (through
        the pool's quota), or None while it is alive or the server cannot tell (an error:
        unconfirmed is not lost)."""
        controller = self._controllers.get(pool_key)
        if controller is None:
            return f"PoolGone: pool {pool_key} was deleted"
        try:
            async with controller.quota.slot("get", f"pods/{namespace}/{pod}"):
                found = await kube.read_pod(controller.api, namespace, pod)
        except Exception as error:
            _log.info("pool %s: cannot confirm agent %s: %s", pool_key, pod, error)
            return None
        return agents.gone_reason(found)

    def release(self, lease: AgentLease, *, delete: bool = False) -> None:
        """Give the agent back (ephemeral pools, or `delete`, remove it)."""
        controller = self._controllers.get(lease.pool_key)
        if controller is None:
            lease.released = True
            return
        controller.release(lease, delete=delete)

    def set_problem(self, pool_key: str, reason: str, message: str | None) -> None:
        """Report (message) or clear (None) a problem that degrades the pool, by reason."""
        problems = self._problems.setdefault(pool_key, {})
        if message is None:
            problems.pop(reason, None)
        else:
            problems[reason] = message
        self.notify(pool_key)

    def notify(self, pool_key: str) -> None:
        """Something in the pool's status changed (e.g. step counts): refresh it."""
        controller = self._controllers.get(pool_key)
        if controller is not None:
            controller.wake()

    def _steps(self, key: str) -> StepCounts:
        counter = self.step_counter
        return counter(key) if counter is not None else StepCounts()

    def describe(self) -> dict[str, dict[str, Any]]:
        return {key: c.describe() for key, c in sorted(self._controllers.items())}

    async def close(self) -> None:
        for key in list(self._controllers):
            controller = self._controllers.pop(key)
            await controller.stop("is no longer served: the operator stops")
