"""Shared fixtures: a sandbox cluster with our CRDs, and the operator running in-process.

Reuse them from any test under tests/integration/ (pool, steps, surface tests):

- ``sandbox_time_scale`` (float, default 1.0): multiplies every kubelet profile duration.
  Override it in a test module (``@pytest.fixture def sandbox_time_scale(): return 0.2``)
  to make profiles faster or slower.
- ``cluster``: a running :class:`~agentpool_sandbox.cluster.Sandbox` with ``crds/*.yaml``
  installed and established. ``cluster.kubeconfig_path`` and ``cluster.url`` locate it.
  It runs in a thread with its own event loop (see :class:`SandboxThread`): talk to it
  over HTTP, never call its coroutines or touch its store from the test.
- ``kube_api``: a kubernetes_asyncio ``ApiClient`` for the test's own requests. It sends
  the User-Agent ``agentpool-tests``, so the sandbox's stats keep them apart from the
  operator's (``agentpool-operator/<version>``).
- ``operator_config``: the :class:`~agentpool.config.Config` an operator starts with: the
  cluster's kubeconfig, namespace ``default``, standalone, metrics on a random port, no
  liveness endpoint, a short image pull grace. Override it in a module to change settings.
- ``start_operator``: ``op = await start_operator(config=None)`` starts one more operator
  (``kopf.operator`` in a thread with its own event loop) and returns a
  :class:`RunningOperator` once kopf is ready: ``op.runtime`` (the Runtime: ``.pools``,
  ``.quotas``, ``.telemetry.url``), ``await op.call(lambda: coroutine)`` to run a
  coroutine in the operator's loop (e.g. ``op.runtime.pools.acquire``), and
  ``await op.stop()``. Every operator still running is stopped at teardown.
- ``operator``: one operator started with ``operator_config``.
- ``peered_config``: ``operator_config`` with kopf peering on (not standalone, peering
  name :data:`PEERING`), after installing kopf's peering CRDs and the ``KopfPeering`` /
  ``ClusterKopfPeering`` objects of that name in the sandbox (as the chart would).

- ``until``: :func:`~agentpool_sandbox.testing.eventually`, which polls a real condition with
  a bounded deadline (``await until(check, within, message)``; ``check`` is an async callable).
- ``reader``: a :class:`ClusterReader` over ``kube_api``: ``pool``, ``condition``,
  ``agents``, ``events``, ``reasons``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import kopf
import pytest
from cluster_crds import TEST_USER_AGENT, install_crds
from kubernetes_asyncio.client import (
    ApiClient,
    ApiextensionsV1Api,
    CoreV1Api,
    CustomObjectsApi,
)
from kubernetes_asyncio.client.exceptions import ApiException

from agentpool.config import Config
from agentpool.kube import client as kube
from agentpool.runtime import Runtime, run_operator
from agentpool_sandbox.cluster import Sandbox
from agentpool_sandbox.testing import eventually

NAMESPACE = "default"
# Bounds for waiting on the operator; generous for a loaded 2-core machine.
STARTUP_WITHIN = 15.0
STOP_WITHIN = 15.0

T = TypeVar("T")


@pytest.fixture
def sandbox_time_scale() -> float:
    return 1.0


class SandboxThread:
    """A Sandbox served by its own event loop in a background thread.

    kopf, when an in-process operator stops, waits 5 s for every task created after its
    start and then cancels them all: with the sandbox in the same loop, that would be the
    simulated kubelet's pod tasks and the API server's connection handlers. In a thread
    of its own the sandbox is out of kopf's reach (and a stopped operator stops at once).
    Tests only talk to it over HTTP and read plain attributes (url, kubeconfig_path,
    state_dir) of the Sandbox object.
    """

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._started: concurrent.futures.Future[Sandbox] = concurrent.futures.Future()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="sandbox", daemon=True)

    def _main(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            async with Sandbox(**self._options) as sandbox:
                self._started.set_result(sandbox)
                await self._stop.wait()
        except BaseException as error:
            if not self._started.done():
                self._started.set_exception(error)
            raise

    async def start(self) -> Sandbox:
        self._thread.start()
        return await asyncio.wrap_future(self._started)

    async def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        await asyncio.to_thread(self._thread.join, STOP_WITHIN)


@pytest.fixture
async def cluster(tmp_path: Path, sandbox_time_scale: float) -> AsyncIterator[Sandbox]:
    served = SandboxThread(state_dir=tmp_path / "sandbox", time_scale=sandbox_time_scale)
    sandbox = await served.start()
    try:
        await install_crds(sandbox.kubeconfig_path)
        yield sandbox
    finally:
        await served.stop()


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


class RunningOperator:
    """An operator running in a thread with its own event loop; `runtime` is its Runtime.

    Why a thread: when kopf stops in-process, it waits 5 s for every task created after its
    start (the test's own task among them) and then cancels them. In a loop of its own the
    operator stops at once and cancels nothing of the test's, as a separate process would.
    Read plain state of `runtime` freely; run its coroutines with `call`.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self.memo = kopf.Memo()
        self.stop_flag = threading.Event()
        self.ready_flag = threading.Event()
        self.done: concurrent.futures.Future[None] = concurrent.futures.Future()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._main, name="operator", daemon=True)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as error:
            self.done.set_exception(error)
        else:
            self.done.set_result(None)

    async def _serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        await run_operator(
            self.config,
            stop_flag=self.stop_flag,
            ready_flag=self.ready_flag,
            memo=self.memo,
            metrics_host="127.0.0.1",
        )

    async def start(self) -> None:
        self._thread.start()
        ready = asyncio.ensure_future(asyncio.to_thread(self.ready_flag.wait, STARTUP_WITHIN))
        done = asyncio.wrap_future(self.done)
        await asyncio.wait({ready, done}, return_when=asyncio.FIRST_COMPLETED)
        if self.done.done():
            await ready
            self.done.result()  # raises what stopped the operator
            raise AssertionError("the operator exited during startup")
        if not await ready:
            raise AssertionError(f"the operator was not ready within {STARTUP_WITHIN:g}s")

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.memo.runtime
        return runtime

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    async def call(self, function: Callable[[], Awaitable[T]]) -> T:
        """Await `function()` in the operator's event loop (e.g. `runtime.pools.acquire`)."""
        assert self.loop is not None

        async def run() -> T:
            return await function()

        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(run(), self.loop))

    async def stop(self) -> None:
        self.stop_flag.set()
        async with asyncio.timeout(STOP_WITHIN):
            await asyncio.wrap_future(self.done)
        await asyncio.to_thread(self._thread.join, STOP_WITHIN)


StartOperator = Callable[..., Awaitable[RunningOperator]]


@pytest.fixture
async def start_operator(operator_config: Config) -> AsyncIterator[StartOperator]:
    running: list[RunningOperator] = []

    async def start(config: Config | None = None) -> RunningOperator:
        op = RunningOperator(config or operator_config)
        running.append(op)
        await op.start()
        return op

    yield start
    for op in running:
        if op.running:
            await op.stop()


@pytest.fixture
async def operator(start_operator: StartOperator) -> RunningOperator:
    return await start_operator()


@pytest.fixture
def until() -> Callable[..., Awaitable[Any]]:
    return eventually


# --- kopf peering -------------------------------------------------------------------------

PEERING = "agentpool"
PEERING_GROUP = "kopf.dev"


def peering_crd(kind: str, scope: str, group: str = PEERING_GROUP) -> dict[str, Any]:
    """A kopf peering CRD as kopf's peering.yaml defines it: open schema, no status subresource."""
    plural = kind.lower() + "s"
    schema = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": scope,
            "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


async def install_peering(api: ApiClient, name: str = PEERING, namespace: str = NAMESPACE) -> None:
    """kopf's peering CRDs, then a KopfPeering in `namespace` and a ClusterKopfPeering."""
    extensions = ApiextensionsV1Api(api)
    for kind, scope in (("ClusterKopfPeering", "Cluster"), ("KopfPeering", "Namespaced")):
        crd: Any = peering_crd(kind, scope)  # the client takes plain dicts as well as models
        await extensions.create_custom_resource_definition(crd)
    objects = CustomObjectsApi(api)

    async def served() -> bool:
        try:
            await objects.list_cluster_custom_object(PEERING_GROUP, "v1", "kopfpeerings")
            await objects.list_cluster_custom_object(PEERING_GROUP, "v1", "clusterkopfpeerings")
        except ApiException:
            return False
        return True

    await eventually(served, 10.0, "the peering CRDs to be served")
    version = f"{PEERING_GROUP}/v1"
    await objects.create_cluster_custom_object(
        PEERING_GROUP,
        "v1",
        "clusterkopfpeerings",
        {"apiVersion": version, "kind": "ClusterKopfPeering", "metadata": {"name": name}},
    )
    await objects.create_namespaced_custom_object(
        PEERING_GROUP,
        "v1",
        namespace,
        "kopfpeerings",
        {
            "apiVersion": version,
            "kind": "KopfPeering",
            "metadata": {"name": name, "namespace": namespace},
        },
    )


@pytest.fixture
async def peered_config(operator_config: Config, kube_api: ApiClient) -> Config:
    await install_peering(kube_api)
    return dataclasses.replace(operator_config, standalone=False, peering_name=PEERING)


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
