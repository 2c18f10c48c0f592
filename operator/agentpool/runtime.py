"""The operator's runtime: what lives between kopf's startup and cleanup, and how to run it.

`Runtime` holds the typed Config, the Kubernetes clients, the per-pool quotas, the Events
recorder, the PoolManager, the step engine and the telemetry server.
`handlers.py` forwards every watch event to it. `run_operator` runs kopf in-process; the
CLI (`agentpool run`) and the tests call it.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from concurrent.futures import Future as ThreadFuture
from typing import Any, Protocol

import kopf

from agentpool import handlers, timestamps
from agentpool.config import Config
from agentpool.kube import client as kube
from agentpool.kube.events import EventRecorder
from agentpool.kube.quota import QuotaRegistry
from agentpool.metrics import METRICS, Catalogue
from agentpool.pool.manager import PoolManager
from agentpool.pool.settings import ControllerSettings
from agentpool.steps.agents import PoolAgents
from agentpool.steps.engine import StepEngine
from agentpool.telemetry import Telemetry

__all__ = ["Flag", "Runtime", "StepEvents", "run_operator"]

Flag = asyncio.Future[Any] | asyncio.Event | ThreadFuture[Any] | threading.Event


class StepEvents(Protocol):
    """What the runtime needs from the step engine."""

    async def on_event(self, event_type: str | None, body: dict[str, Any]) -> None: ...

    async def close(self) -> None: ...

    def pool_changed(self, pool: str) -> None: ...


class Runtime:
    """Everything the handlers call into; one per running operator."""

    def __init__(
        self,
        config: Config,
        clients: kube.KubeClients,
        *,
        metrics: Catalogue = METRICS,
        metrics_host: str = "0.0.0.0",
    ) -> None:
        self.config = config
        self.clients = clients
        self.metrics = metrics
        self.quotas = QuotaRegistry(metrics)
        self.events = EventRecorder(clients.api)
        self.pools = PoolManager(
            clients.api,
            self.quotas,
            self.events,
            settings=ControllerSettings(image_pull_grace=config.image_pull_grace),
            metrics=metrics,
        )
        self.steps: StepEvents | None = None
        self.telemetry = Telemetry(
            config.metrics_port,
            registry=metrics.registry,
            connections=self.debug_connections,
            host=metrics_host,
        )

    @classmethod
    async def start(
        cls, config: Config, *, metrics: Catalogue = METRICS, metrics_host: str = "0.0.0.0"
    ) -> Runtime:
        """Connect to the cluster and start serving telemetry."""
        clients = await kube.connect(config.kubeconfig)
        runtime = cls(config, clients, metrics=metrics, metrics_host=metrics_host)
        engine = StepEngine(
            config,
            PoolAgents(runtime.pools, runtime.quotas),
            api=clients.api,
            exec_api=clients.exec,
            events=runtime.events,
            metrics=metrics,
        )
        runtime.steps = engine
        runtime.pools.step_counter = engine.counts
        try:
            await runtime.telemetry.start()
        except BaseException:
            await clients.close()
            raise
        return runtime

    async def on_pool_event(self, event_type: str | None, body: dict[str, Any]) -> None:
        await self.pools.on_pool_event(event_type, body)
        if self.steps is not None:
            meta = body.get("metadata") or {}
            self.steps.pool_changed(f"{meta.get('namespace')}/{meta.get('name')}")

    async def on_pod_event(self, event_type: str | None, body: dict[str, Any]) -> None:
        self.pools.on_pod_event(event_type, body)

    async def on_step_event(self, event_type: str | None, body: dict[str, Any]) -> None:
        if self.steps is not None:
            await self.steps.on_event(event_type, body)

    def debug_connections(self) -> dict[str, Any]:
        """Per pool: quota limit, running and queued connections, agents, steps."""
        now = timestamps.now()
        agents = self.pools.describe()
        pools = []
        for entry in self.quotas.describe(now):
            key = entry["pool"]
            described = agents.get(key) or {}
            counter = self.pools.step_counter
            steps = counter(key).to_body() if counter is not None else None
            pools.append(
                {
                    **entry,
                    "agents": described.get("agents"),
                    "waitingBuilds": described.get("waitingBuilds", 0),
                    "specError": described.get("specError"),
                    "steps": steps,
                }
            )
        return {"time": timestamps.format_time(now), "pools": pools}

    async def close(self) -> None:
        if self.steps is not None:
            await self.steps.close()
        await self.pools.close()
        await self.events.close()
        await self.telemetry.close()
        await self.clients.close()


async def run_operator(
    config: Config,
    *,
    stop_flag: Flag | None = None,
    ready_flag: Flag | None = None,
    memo: kopf.Memo | None = None,
    metrics_host: str = "0.0.0.0",
) -> None:
    """Run the operator in this event loop until `stop_flag` is set (or forever).

    `memo` (optional) is kopf's memo: after startup, `memo.runtime` is the Runtime, which
    is how tests reach the pools and the telemetry port. The liveness endpoint is served
    on `config.liveness_port` unless it is 0.
    """
    memo = memo if memo is not None else kopf.Memo()
    memo.config = config
    memo.start_runtime = functools.partial(Runtime.start, metrics_host=metrics_host)
    liveness = f"http://0.0.0.0:{config.liveness_port}/healthz" if config.liveness_port else None
    await kopf.operator(
        registry=handlers.registry,
        standalone=config.standalone,
        # kopf makes peering mandatory when given a name: a standalone operator would then
        # wait forever for a peering CRD it never uses.
        peering_name=None if config.standalone else config.peering_name,
        clusterwide=not config.namespaces,
        namespaces=list(config.namespaces),
        liveness_endpoint=liveness,
        stop_flag=stop_flag,
        ready_flag=ready_flag,
        memo=memo,
    )
