"""The pool controller's retries of failed API calls, with the API client replaced by fakes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from kubernetes_asyncio.client.exceptions import ApiException
from prometheus_client import CollectorRegistry

from agentpool.kube import client as kube
from agentpool.kube.backoff import BackoffPolicy
from agentpool.kube.quota import QuotaRegistry
from agentpool.metrics import Catalogue
from agentpool.pool.controller import PoolController
from agentpool.pool.settings import ControllerSettings

# Fast, so that a test sees several retries; the shape is the production one.
SETTINGS = ControllerSettings(api_backoff=BackoffPolicy(base=0.01, cap=0.05))
POOL: dict[str, Any] = {
    "apiVersion": "agentpool.dev/v1alpha1",
    "kind": "AgentPool",
    "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "generation": 1},
    "spec": {
        "template": {"spec": {"containers": [{"name": "agent", "image": "busybox"}]}},
        "agentContainer": "agent",
        "minIdle": 2,
        "maxAgents": 4,
    },
}


def server_error() -> ApiException:
    error = ApiException(status=500, reason="Internal Server Error")
    error.body = json.dumps({"reason": "InternalError", "message": "etcd is down"})  # type: ignore[assignment]
    return error


class FakeApi:
    """The calls the controller makes, each failing while its `failing` count lasts."""

    def __init__(self) -> None:
        self.failing = {"list": 0, "create": 0, "delete": 0}
        self.calls = {"list": 0, "create": 0, "delete": 0}
        self.statuses: list[dict[str, Any]] = []
        self.events: list[tuple[str, str, str]] = []

    def _call(self, verb: str) -> None:
        self.calls[verb] += 1
        if self.failing[verb] > 0:
            self.failing[verb] -= 1
            raise server_error()

    async def list_pods(self, api: object, namespace: str, selector: str) -> list[Any]:
        self._call("list")
        return []

    async def create_pod(self, api: object, namespace: str, manifest: Any) -> dict[str, Any]:
        self._call("create")
        pod = json.loads(json.dumps(manifest))
        pod["metadata"]["name"] = f"p-{self.calls['create']}"
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        pod["metadata"]["creationTimestamp"] = now  # starting, not timed out
        pod["status"] = {"phase": "Pending"}
        return dict(pod)

    async def delete_pod(self, api: object, namespace: str, name: str) -> bool:
        self._call("delete")
        return True

    async def patch_status(self, api: object, plural: str, ns: str, name: str, body: Any) -> None:
        self.statuses.append(body)

    def record(self, ref: object, type_: str, reason: str, message: str, **_: Any) -> None:
        self.events.append((type_, reason, message))


@pytest.fixture
async def fake(monkeypatch: pytest.MonkeyPatch) -> FakeApi:
    api = FakeApi()
    for name in ("list_pods", "create_pod", "delete_pod", "patch_status"):
        monkeypatch.setattr(kube, name, getattr(api, name))  # the controller calls kube.X
    return api


@pytest.fixture
async def start(fake: FakeApi) -> AsyncIterator[Callable[[], PoolController]]:
    started: list[PoolController] = []

    def run() -> PoolController:
        pool = PoolController(
            "ns/p",
            POOL,
            api=None,  # type: ignore[arg-type]
            quotas=QuotaRegistry(Catalogue(CollectorRegistry())),
            events=fake,  # type: ignore[arg-type]
            settings=SETTINGS,
            metrics=Catalogue(CollectorRegistry()),
        )
        pool.start()
        started.append(pool)
        return pool

    yield run
    for pool in started:
        await pool.stop()


async def until(check: Callable[[], bool], within: float = 5.0) -> None:
    """Wait (bounded) for `check`, looking again after every turn of the event loop."""
    async with asyncio.timeout(within):
        while not check():  # noqa: ASYNC110 - the fakes have no event to wait on
            await asyncio.sleep(0.005)


def condition(fake: FakeApi, type_: str) -> dict[str, Any]:
    conditions = fake.statuses[-1].get("conditions") if fake.statuses else None
    return next((c for c in conditions or [] if c["type"] == type_), {})


async def test_a_failed_first_list_holds_planning_until_a_retry_succeeds(
    fake: FakeApi, start: Callable[[], PoolController]
) -> None:
    fake.failing["list"] = 3
    start()

    await until(lambda: fake.calls["create"] == 2)

    # Nothing was created before the pool's pods were known: no duplicates after a restart.
    assert fake.calls["list"] == 4


async def test_failing_creations_degrade_the_pool_until_one_succeeds(
    fake: FakeApi, start: Callable[[], PoolController]
) -> None:
    fake.failing["create"] = 10**6
    start()

    await until(lambda: condition(fake, "Degraded").get("reason") == "AgentCreateFailing")
    assert "HTTP 500 InternalError: etcd is down" in condition(fake, "Degraded")["message"]
    assert condition(fake, "Ready")["status"] == "False"
    fake.failing["create"] = 0
    await until(lambda: condition(fake, "Degraded").get("status") == "False")

    warnings = [reason for type_, reason, _ in fake.events if type_ == "Warning"]
    # One report for the whole series (the next would come 30 s later); no launch failure.
    assert warnings == ["AgentCreateFailed"]
    await until(lambda: fake.statuses[-1]["agents"]["starting"] == 2)
