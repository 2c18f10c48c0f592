"""The step engine on the sandbox without kopf: agent pods made directly, events from the store.

Tests and the benchmark drive the real engine (real exec WebSockets, real shells, the real
status writer over HTTP) while the pool layer is a small stand-in that leases pre-started pods.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from agentpool.config import Config
from agentpool.kube import client as kube
from agentpool.kube.quota import ApiQuota, QuotaRegistry
from agentpool.metrics import Catalogue
from agentpool.model import AgentPoolSpec, StepPhase
from agentpool.pool.agents import gone_reason
from agentpool.steps.context import Preference
from agentpool.steps.engine import StepEngine
from agentpool.steps.outcomes import Outcome
from agentpool.steps.runs import StepRun
from agentpool_sandbox import profiles
from agentpool_sandbox.cluster import Sandbox

ROOT = Path(__file__).resolve().parents[3]
NS = "default"
BUILDSTEPS = "buildsteps.agentpool.dev"
POOLS = "agentpools.agentpool.dev"
CONTAINERS = ("main", "side")


def pool_body(name: str, **spec: Any) -> dict[str, Any]:
    containers = [{"name": c, "image": "busybox"} for c in CONTAINERS]
    return {
        "apiVersion": "agentpool.dev/v1alpha1",
        "kind": "AgentPool",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"template": {"spec": {"containers": containers}}, **spec},
    }


def step_body(name: str, script: str, pool: str = "p", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "agentpool.dev/v1alpha1",
        "kind": "BuildStep",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"pool": pool, "script": script, **spec},
    }


@dataclass(eq=False)
class Lease:
    namespace: str
    pod_name: str
    lost: asyncio.Event = field(default_factory=asyncio.Event)
    lost_reason: str = ""


class StaticAgents:
    """A pool layer that leases pods created up front; enough to exercise the engine."""

    def __init__(self, quotas: QuotaRegistry) -> None:
        self.quotas = quotas
        self.specs: dict[str, AgentPoolSpec] = {}
        self.free: dict[str, collections.deque[str]] = {}
        self.available = asyncio.Condition()
        self.acquired: list[tuple[str, str]] = []  # (build, pod)
        self.released: list[tuple[str, bool]] = []
        self.pod_pool: dict[str, str] = {}
        self.waiters: collections.Counter[str] = collections.Counter()
        self.sandbox: Sandbox | None = None

    def add_pool(self, key: str, body: dict[str, Any], pods: list[str]) -> None:
        spec = AgentPoolSpec.from_body(body["spec"])
        self.specs[key] = spec
        self.free.setdefault(key, collections.deque()).extend(pods)
        self.pod_pool.update(dict.fromkeys(pods, key))
        connections = spec.api_connections
        self.quotas.ensure(key, connections.max, connections.queue_timeout)

    def pool_spec(self, pool: str) -> AgentPoolSpec | None:
        return self.specs.get(pool)

    def quota(self, pool: str) -> ApiQuota | None:
        return self.quotas.get(pool)

    async def acquire(
        self, pool: str, build: str, *, within: float | None, prefer: Preference | None = None
    ) -> Lease:
        # FIFO, no deadline, no preference: enough for the engine's tests.
        async with self.available:
            self.waiters[pool] += 1
            try:
                await self.available.wait_for(lambda: bool(self.free.get(pool)))
            finally:
                self.waiters[pool] -= 1
            pod = self.free[pool].popleft()
        self.acquired.append((build, pod))
        return Lease(NS, pod)

    def waiting_builds(self, pool: str) -> int:
        return self.waiters[pool]

    async def agent_gone(self, pool: str, namespace: str, pod: str) -> str | None:
        # What the pool layer would read from the API server.
        assert self.sandbox is not None
        try:
            found = self.sandbox.store.get("pods", namespace, pod)
        except Exception:
            return "PodVanished: the agent pod no longer exists"
        return gone_reason(found)

    def notify(self, pool: str) -> None:
        pass  # no pool status to refresh

    async def release(self, lease: Lease, *, delete: bool) -> None:
        self.released.append((lease.pod_name, delete))
        if delete:
            return
        pool = self.pod_pool[lease.pod_name]
        async with self.available:
            self.free[pool].append(lease.pod_name)
            self.available.notify_all()


@dataclass
class Harness:
    sandbox: Sandbox
    engine: StepEngine
    agents: StaticAgents
    metrics: Catalogue
    finished: dict[str, Outcome] = field(default_factory=dict)
    runs: dict[str, StepRun] = field(default_factory=dict)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.sandbox.store.create(BUILDSTEPS, NS, body)

    def delete(self, name: str) -> None:
        self.sandbox.store.delete(BUILDSTEPS, NS, name)

    def status(self, name: str) -> dict[str, Any]:
        return dict(self.sandbox.store.get(BUILDSTEPS, NS, name).get("status") or {})

    def home(self, pod: str, container: str = "main") -> Path:
        return self.sandbox.state_dir / "pods" / NS / pod / container

    async def wait_final(self, *names: str, within: float = 30.0) -> dict[str, dict[str, Any]]:
        """Wait until each step's final phase is written to its object; return the statuses."""

        def done() -> bool:
            return all(_final(self, n) for n in names)

        async with asyncio.timeout(within):
            async with self.changed:
                await self.changed.wait_for(done)
        return {n: self.status(n) for n in names}

    async def wait_until(self, condition: Callable[[], bool], within: float = 30.0) -> None:
        async with asyncio.timeout(within):
            async with self.changed:
                await self.changed.wait_for(condition)

    async def stats(self) -> dict[str, Any]:
        return await sandbox_json(self.sandbox, "GET", "/sandbox/v1/stats")


def _final(harness: Harness, name: str) -> bool:
    try:
        phase = harness.status(name).get("phase")
    except Exception:
        return False
    return phase is not None and StepPhase(phase).is_final


async def sandbox_json(sandbox: Sandbox, method: str, path: str, body: Any = None) -> Any:
    async with (
        aiohttp.ClientSession(sandbox.url) as http,
        http.request(method, path, json=body) as response,
    ):
        return await response.json() if response.content_type == "application/json" else None


def add_crds(sandbox: Sandbox) -> None:
    for path in sorted((ROOT / "crds").glob("*.yaml")):
        sandbox.store.create(
            "customresourcedefinitions.apiextensions.k8s.io", None, yaml.safe_load(path.read_text())
        )


async def start_pods(sandbox: Sandbox, pool: str, names: list[str]) -> None:
    for name in names:
        sandbox.store.create(
            "pods",
            NS,
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": name,
                    "labels": {"agentpool.dev/pool": pool},
                    "annotations": {profiles.PROFILE_ANNOTATION: "standard"},
                },
                "spec": {"containers": [{"name": c, "image": "busybox"} for c in CONTAINERS]},
            },
        )
    pending = set(names)
    async with asyncio.timeout(20):
        async for _, obj in sandbox.store.subscribe("pods", NS):
            if obj["status"].get("phase") == "Running":
                pending.discard(obj["metadata"]["name"])
            if not pending:
                return


@contextlib.asynccontextmanager
async def engine_on_sandbox(
    tmp_path: Path,
    *,
    pools: dict[str, tuple[dict[str, Any], int]] | None = None,
    config: Config | None = None,
    sandbox: Sandbox | None = None,
) -> AsyncIterator[Harness]:
    """Sandbox + CRDs + pools with started agent pods + a running engine fed by the store."""
    pools = pools if pools is not None else {"p": ({}, 1)}
    own = sandbox is None
    sb = sandbox or Sandbox(state_dir=tmp_path / "state")
    async with contextlib.AsyncExitStack() as stack:
        if own:
            await stack.enter_async_context(sb)
            add_crds(sb)
        from prometheus_client import CollectorRegistry  # noqa: PLC0415

        metrics = Catalogue(CollectorRegistry())
        quotas = QuotaRegistry(metrics)
        agents = StaticAgents(quotas)
        agents.sandbox = sb
        for name, (spec, count) in pools.items():
            body = pool_body(name, **spec)
            with contextlib.suppress(Exception):
                sb.store.create(POOLS, NS, body)
            pods = [f"{name}-{i}" for i in range(count)]
            with contextlib.suppress(Exception):
                await start_pods(sb, name, pods)
            agents.add_pool(f"{NS}/{name}", body, pods)
        clients = await kube.connect(str(sb.kubeconfig_path))
        stack.push_async_callback(clients.close)
        engine = StepEngine(
            config or Config(build_grace=0.2),
            agents,
            api=clients.api,
            exec_api=clients.exec,
            metrics=metrics,
        )
        harness = Harness(sb, engine, agents, metrics)

        def finished(run: StepRun, outcome: Outcome) -> None:
            harness.finished[run.name] = outcome
            harness.runs[run.name] = run

        engine.on_finished = finished

        async def feed() -> None:
            async for kind, obj in sb.store.subscribe(BUILDSTEPS, NS):
                engine.on_step_event(kind, obj)
                async with harness.changed:
                    harness.changed.notify_all()

        feeder = asyncio.create_task(feed())
        try:
            yield harness
        finally:
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feeder
            await engine.stop()
