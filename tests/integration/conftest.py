"""Shared fixtures: a sandbox cluster with our CRDs, and the operator running in-process.

Reuse them from any test under tests/integration/ (pool, steps, surface tests):

- ``sandbox_time_scale`` (float, default 1.0): multiplies every kubelet profile duration.
  Override it in a test module (``@pytest.fixture def sandbox_time_scale(): return 0.2``)
  to make profiles faster or slower.
- ``cluster``: a running :class:`~agentpool.sandbox.cluster.Sandbox` with ``crds/*.yaml``
  installed and established. ``cluster.kubeconfig_path`` and ``cluster.url`` locate it.
- ``kube_api``: a kubernetes_asyncio ``ApiClient`` for the test's own requests. It sends
  the User-Agent ``agentpool-tests``, so the sandbox's stats keep them apart from the
  operator's (``agentpool-operator/<version>``).
- ``operator_config``: the :class:`~agentpool.config.Config` an operator starts with: the
  cluster's kubeconfig, namespace ``default``, standalone, metrics on a random port, no
  liveness endpoint, a short image pull grace. Override it in a module to change settings.
- ``start_operator``: ``op = await start_operator(config=None)`` starts one more operator
  (``kopf.operator`` in this event loop) and returns a :class:`RunningOperator` once kopf
  is ready: ``op.runtime`` (the Runtime: ``.pools``, ``.quotas``, ``.telemetry.url``),
  ``await op.stop()``. Every operator still running is stopped at teardown.
- ``operator``: one operator started with ``operator_config``.

- ``until``: :func:`eventually`, which polls a real condition with a bounded deadline
  (``await until(check, within, message)``; ``check`` is an async callable).
- ``reader``: a :class:`ClusterReader` over ``kube_api``: ``pool``, ``condition``,
  ``agents``, ``events``, ``reasons``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import kopf
import pytest
import yaml
from kubernetes_asyncio.client import (
    ApiClient,
    ApiextensionsV1Api,
    CoreV1Api,
    CustomObjectsApi,
)

from agentpool.config import Config
from agentpool.kube import client as kube
from agentpool.runtime import Runtime, run_operator
from agentpool.sandbox.cluster import Sandbox

CRDS = Path(__file__).parents[2] / "crds"
NAMESPACE = "default"
TEST_USER_AGENT = "agentpool-tests"
# Bounds for waiting on the operator; generous for a loaded 2-core machine.
STARTUP_WITHIN = 15.0
STOP_WITHIN = 15.0

T = TypeVar("T")


async def eventually(
    check: Callable[[], Awaitable[T | None]],
    within: float = 15.0,
    message: str = "condition",
    interval: float = 0.05,
) -> T:
    """Poll `check` until it returns a truthy value (returned), failing after `within` s.

    Used for states that live in another process's view (the API server's objects), for
    which the test has no event to await.
    """
    last: T | None = None
    try:
        async with asyncio.timeout(within):
            while True:
                last = await check()
                if last:
                    return last
                await asyncio.sleep(interval)
    except TimeoutError:
        raise AssertionError(
            f"timed out after {within:g}s waiting for {message}; last: {last!r}"
        ) from None


@pytest.fixture
def sandbox_time_scale() -> float:
    return 1.0


@pytest.fixture
async def cluster(tmp_path: Path, sandbox_time_scale: float) -> AsyncIterator[Sandbox]:
    async with Sandbox(state_dir=tmp_path / "sandbox", time_scale=sandbox_time_scale) as sandbox:
        api = kube.new_api_client(await kube.load_configuration(str(sandbox.kubeconfig_path)))
        try:
            extensions = ApiextensionsV1Api(api)
            for path in sorted(CRDS.glob("*.yaml")):
                await extensions.create_custom_resource_definition(yaml.safe_load(path.read_text()))
        finally:
            await api.close()
        yield sandbox


@pytest.fixture
async def kube_api(cluster: Sandbox) -> AsyncIterator[ApiClient]:
    api = kube.new_api_client(await kube.load_configuration(str(cluster.kubeconfig_path)))
    api.user_agent = TEST_USER_AGENT
    yield api
    await api.close()


@pytest.fixture
def operator_config(cluster: Sandbox) -> Config:
    return Config(
        namespaces=(NAMESPACE,),
        metrics_port=0,
        liveness_port=0,
        standalone=True,
        kubeconfig=str(cluster.kubeconfig_path),
        image_pull_grace=1.0,
    )


@dataclass
class RunningOperator:
    """An operator running in this event loop; `runtime` is its Runtime."""

    memo: kopf.Memo
    task: asyncio.Task[None]
    stop_flag: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.memo.runtime
        return runtime

    async def stop(self) -> None:
        self.stop_flag.set()
        with contextlib.suppress(asyncio.CancelledError):
            async with asyncio.timeout(STOP_WITHIN):
                await self.task


StartOperator = Callable[..., Awaitable[RunningOperator]]


@pytest.fixture
async def start_operator(operator_config: Config) -> AsyncIterator[StartOperator]:
    running: list[RunningOperator] = []

    async def start(config: Config | None = None) -> RunningOperator:
        memo = kopf.Memo()
        stop_flag = asyncio.Event()
        ready_flag = asyncio.Event()
        task = asyncio.create_task(
            run_operator(
                config or operator_config,
                stop_flag=stop_flag,
                ready_flag=ready_flag,
                memo=memo,
                metrics_host="127.0.0.1",
            )
        )
        op = RunningOperator(memo=memo, task=task, stop_flag=stop_flag)
        running.append(op)
        ready = asyncio.create_task(ready_flag.wait())
        async with asyncio.timeout(STARTUP_WITHIN):
            await asyncio.wait({ready, task}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            ready.cancel()
            task.result()  # raises what stopped the operator
            raise AssertionError("the operator exited during startup")
        return op

    yield start
    for op in running:
        if not op.task.done():
            await op.stop()


@pytest.fixture
async def operator(start_operator: StartOperator) -> RunningOperator:
    return await start_operator()


@pytest.fixture
def until() -> Callable[..., Awaitable[Any]]:
    return eventually


# --- reading the cluster ------------------------------------------------------------------


class ClusterReader:
    """Reads what the operator wrote, with the test's own client."""

    def __init__(self, api: ApiClient, namespace: str = NAMESPACE) -> None:
        self.api = api
        self.namespace = namespace

    async def pool(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = await CustomObjectsApi(self.api).get_namespaced_custom_object(
            kube.GROUP, kube.VERSION, self.namespace, kube.AGENTPOOLS, name
        )
        return result

    async def condition(self, pool: str, type_: str) -> dict[str, Any]:
        """The pool's condition of that type ({} when absent)."""
        status = (await self.pool(pool)).get("status") or {}
        for condition in status.get("conditions") or []:
            if condition.get("type") == type_:
                return dict(condition)
        return {}

    async def agents(self, pool: str) -> list[dict[str, Any]]:
        """Agent pods of `pool` (by label), oldest first."""
        pods = await kube.list_pods(self.api, self.namespace, f"agentpool.dev/pool={pool}")
        return sorted(
            pods, key=lambda p: (p["metadata"]["creationTimestamp"], p["metadata"]["name"])
        )

    async def events(self, involved: str) -> list[dict[str, Any]]:
        """Events whose involvedObject is named `involved`, as dicts."""
        events = await CoreV1Api(self.api).list_namespaced_event(self.namespace)
        found: list[dict[str, Any]] = [
            self.api.sanitize_for_serialization(e)
            for e in events.items
            if e.involved_object and e.involved_object.name == involved
        ]
        return found

    async def reasons(self, involved: str) -> list[str]:
        return [e["reason"] for e in await self.events(involved)]


@pytest.fixture
def reader(kube_api: ApiClient) -> ClusterReader:
    return ClusterReader(kube_api)
