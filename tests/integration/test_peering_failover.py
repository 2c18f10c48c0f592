"""Two peered operators on one sandbox: the oldest works, the newer waits, then takes over.

With kopf peering on, each replica's priority falls with its start time (handlers.py), so a
replica started later sees a peer of higher priority and pauses, while the first keeps its
pool loops; when the first stops gracefully it removes its peering record and the other
resumes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from kubernetes_asyncio.client import ApiClient, CustomObjectsApi

from agentpool.config import Config
from agentpool.kube import client as kube

NAMESPACE = "default"
POOL = "failover"
POOL_KEY = f"{NAMESPACE}/{POOL}"
PEERING = "agentpool"  # the peering name of the shared `peered_config`
WITHIN = 20.0

# The shared fixtures' types (tests/integration/conftest.py), which tests do not import.
StartOperator = Callable[..., Awaitable[Any]]
Until = Callable[..., Awaitable[Any]]


@pytest.fixture
def sandbox_time_scale() -> float:
    return 0.2


def pool_body(min_idle: int) -> dict[str, Any]:
    return {
        "apiVersion": "agentpool.dev/v1alpha1",
        "kind": "AgentPool",
        "metadata": {"name": POOL, "namespace": NAMESPACE},
        "spec": {
            "minIdle": min_idle,
            "maxAgents": 4,
            "template": {
                "metadata": {"annotations": {"sandbox.agentpool.dev/profile": "standard"}},
                "spec": {"containers": [{"name": "agent", "image": "busybox"}]},
            },
        },
    }


async def scale(api: ApiClient, min_idle: int) -> None:
    patch: Any = CustomObjectsApi(api).patch_namespaced_custom_object
    await patch(
        kube.GROUP,
        kube.VERSION,
        NAMESPACE,
        kube.AGENTPOOLS,
        POOL,
        {"spec": {"minIdle": min_idle}},
        _content_type="application/merge-patch+json",  # not in the client's stubs
    )


async def peers(api: ApiClient) -> dict[str, dict[str, Any]]:
    """The live records of the namespaced peering object: identity -> {priority, ...}."""
    body = await CustomObjectsApi(api).get_namespaced_custom_object(
        "kopf.dev", "v1", NAMESPACE, "kopfpeerings", PEERING
    )
    status: dict[str, dict[str, Any]] = body.get("status") or {}
    return {identity: record for identity, record in status.items() if record}


async def live_agents(api: ApiClient) -> list[str]:
    pods = await kube.list_pods(api, NAMESPACE, f"agentpool.dev/pool={POOL}")
    return sorted(p["metadata"]["name"] for p in pods if not p["metadata"].get("deletionTimestamp"))


async def test_the_oldest_replica_works_and_a_newer_one_takes_over_when_it_stops(
    peered_config: Config, start_operator: StartOperator, kube_api: ApiClient, until: Until
) -> None:
    # A starts alone and serves a pool.
    a = await start_operator(peered_config)
    a_peers: dict[str, dict[str, Any]] = await until(
        lambda: peers(kube_api), WITHIN, "A's peering record"
    )
    (a_id,) = a_peers
    await CustomObjectsApi(kube_api).create_namespaced_custom_object(
        kube.GROUP, kube.VERSION, NAMESPACE, kube.AGENTPOOLS, pool_body(min_idle=1)
    )

    def agents(count: int) -> Callable[[], Awaitable[list[str] | None]]:
        async def check() -> list[str] | None:
            found = await live_agents(kube_api)
            return found if len(found) == count else None

        return check

    await until(agents(1), WITHIN, "A's first agent")
    assert a.runtime.pools.pools() == [POOL_KEY]

    # B starts later and registers as a peer of lower priority.
    b = await start_operator(peered_config)

    async def both_peers() -> dict[str, dict[str, Any]] | None:
        found = await peers(kube_api)
        return found if len(found) == 2 else None

    both = await until(both_peers, WITHIN, "B's peering record next to A's")
    (b_id,) = set(both) - {a_id}
    assert both[b_id]["priority"] < both[a_id]["priority"]

    # A keeps working after B is there: it scales the pool up.
    await scale(kube_api, 2)
    await until(agents(2), WITHIN, "A's second agent")

    assert a.runtime.pools.pools() == [POOL_KEY]
    assert b.runtime.pools.pools() == []
    assert len(await live_agents(kube_api)) == 2

    # A stops gracefully: its record goes, and B takes the pool over.
    await a.stop()

    async def b_alone() -> dict[str, dict[str, Any]] | None:
        found = await peers(kube_api)
        return found if set(found) == {b_id} else None

    await until(b_alone, WITHIN, "A's peering record to be removed")

    async def b_serves() -> bool:
        return bool(b.runtime.pools.pools() == [POOL_KEY])

    await until(b_serves, WITHIN, "B to take the pool over")
    await scale(kube_api, 3)
    await until(agents(3), WITHIN, "B's agent for the scale-up")
