"""Bad input, restarts, status fields and metrics of AgentPools on the sandbox."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from agentpool.pool.manifest import POOL_LABEL


async def status_of(reader: Any, pool: str) -> dict[str, Any]:
    return (await reader.pool(pool)).get("status") or {}


async def idle_agents(reader: Any, pool: str, wanted: int) -> bool:
    idle = ((await status_of(reader, pool)).get("agents") or {}).get("idle")
    return idle == wanted and len(await reader.agents(pool)) == wanted


async def scrape(op: Any) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The operator's /metrics over HTTP, as {(name, labels): value}."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{op.runtime.telemetry.url}/metrics") as response,
    ):
        assert response.status == 200
        text = await response.text()
    samples = {}
    for line in text.splitlines():
        if line.startswith("#") or "{" not in line:
            continue
        name, _, rest = line.partition("{")
        label_text, _, value = rest.rpartition("} ")
        labels = frozenset(
            (k, v.strip('"')) for k, v in (part.split("=", 1) for part in label_text.split(","))
        )
        samples[(name, labels)] = float(value)
    return samples


def sample(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_missing_agent_container_degrades_only_that_pool(
    operator: Any, pools: Any, reader: Any, until: Any
) -> None:
    await pools.create("broken", agentContainer="runner")
    await pools.create("healthy")

    async def degraded() -> dict[str, Any]:
        condition = await reader.condition("broken", "Degraded")
        return condition if condition.get("reason") == "InvalidSpec" else {}

    condition = await until(degraded, 10, "Degraded InvalidSpec")
    assert condition["status"] == "True"
    assert "spec.agentContainer" in condition["message"]
    assert "'runner' is not in spec.template.spec.containers" in condition["message"]
    assert (await reader.condition("broken", "Ready"))["status"] == "False"
    assert await reader.agents("broken") == []

    async def invalid_event() -> list[dict[str, Any]]:
        return [e for e in await reader.events("broken") if e["reason"] == "InvalidSpec"]

    event = (await until(invalid_event, 10, "an InvalidSpec Event"))[0]
    assert (event["type"], "'runner'" in event["message"]) == ("Warning", True)
    await until(lambda: idle_agents(reader, "healthy", 1), 10, "the healthy pool serving")


async def test_min_idle_above_max_agents_is_refused_by_the_schema(
    operator: Any, pools: Any, reader: Any
) -> None:
    # The CRD's CEL rule; an API server that skips it gets Degraded from the operator
    # instead (model.AgentPoolSpec raises the same complaint, unit-tested).
    with pytest.raises(ApiException) as refused:
        await pools.create("inverted", minIdle=5, maxAgents=2)
    assert refused.value.status == 422
    assert "spec.minIdle must not be greater than spec.maxAgents" in refused.value.body
    assert await reader.agents("inverted") == []


async def test_fixing_the_spec_clears_degraded(
    operator: Any, pools: Any, reader: Any, until: Any
) -> None:
    await pools.create("fixable", agentContainer="runner")

    async def invalid() -> bool:
        return (await reader.condition("fixable", "Degraded")).get("reason") == "InvalidSpec"

    await until(invalid, 10, "Degraded InvalidSpec")
    await pools.patch_spec("fixable", {"agentContainer": "agent"})

    async def healthy() -> bool:
        degraded = await reader.condition("fixable", "Degraded")
        return degraded.get("status") == "False" and await idle_agents(reader, "fixable", 1)

    await until(healthy, 10, "the pool healthy after the fix")


async def test_restart_mid_scaling_neither_duplicates_nor_orphans(
    start_operator: Any, pools: Any, reader: Any, until: Any
) -> None:
    first = await start_operator()
    await pools.create("restart", profile="virtual-kubelet", minIdle=3, maxAgents=8)
    await until(lambda: idle_agents(reader, "restart", 3), 10, "three idle agents")
    await pools.patch_spec("restart", {"minIdle": 8})

    async def scaling_up() -> bool:
        return len(await reader.agents("restart")) >= 4

    await until(scaling_up, 10, "the pool scaling up")
    await first.stop()
    second = await start_operator()

    await until(lambda: idle_agents(reader, "restart", 8), 20, "eight idle agents")
    pods = await reader.agents("restart")
    assert len(pods) == 8
    assert all(p["metadata"]["ownerReferences"][0]["name"] == "restart" for p in pods)
    assert all(p["metadata"]["labels"][POOL_LABEL] == "restart" for p in pods)
    assert "AgentFailed" not in await reader.reasons("restart")
    # Both operators share this process's metrics. No launch is counted twice: the second
    # operator adopts agents it finds started without counting them as its launches (a
    # launch that finished between the two is counted by neither).
    samples = await scrape(second)
    launches = sample(
        samples, "agentpool_agent_launches_total", pool="default/restart", result="ready"
    )
    assert 3 <= launches <= 8


async def test_status_reports_counts_connections_and_generation(
    operator: Any, pools: Any, reader: Any, until: Any
) -> None:
    await pools.create("reported", minIdle=2, apiConnections={"max": 7})
    await until(lambda: idle_agents(reader, "reported", 2), 10, "two idle agents")
    await pools.patch_spec("reported", {"minIdle": 1})

    async def observed() -> dict[str, Any]:
        status = await status_of(reader, "reported")
        return status if status.get("observedGeneration") == 2 else {}

    status = await until(observed, 10, "observedGeneration 2")
    assert status["agents"]["busy"] == 0
    assert status["agents"]["failed"] == 0
    connections = status["apiConnections"]
    assert connections["limit"] == 7
    assert "/7" in connections["summary"]
    assert {c["type"] for c in status["conditions"]} == {"Ready", "Degraded"}
    assert all(c["observedGeneration"] == 2 for c in status["conditions"])


async def test_metrics_describe_agents_and_launches(
    operator: Any, pools: Any, reader: Any, until: Any
) -> None:
    await pools.create("measured", profile="virtual-kubelet", minIdle=3)
    await until(lambda: idle_agents(reader, "measured", 3), 10, "three idle agents")

    async def exported() -> dict[Any, float]:
        samples = await scrape(operator)
        idle = sample(samples, "agentpool_agents", pool="default/measured", state="idle")
        return samples if idle == 3 else {}

    samples = await until(exported, 10, "the idle gauge at 3")
    pool = "default/measured"
    assert sample(samples, "agentpool_agents", pool=pool, state="starting") == 0
    assert sample(samples, "agentpool_agent_launches_total", pool=pool, result="ready") == 3
    assert sample(samples, "agentpool_agent_startup_seconds_count", pool=pool) == 3
    assert sample(samples, "agentpool_agent_virtual_kubelet_pending_total", pool=pool) >= 1
    assert sample(samples, "agentpool_api_connections_limit", pool=pool) == 32

    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{operator.runtime.telemetry.url}/debug/connections") as response,
    ):
        debug = await response.json()
    entry = next(p for p in debug["pools"] if p["pool"] == pool)
    assert entry["agents"]["idle"] == 3


async def test_a_new_template_lifts_the_launch_hold_at_once(
    operator: Any, pools: Any, reader: Any, until: Any
) -> None:
    containers = [{"name": "agent", "image": "busybox:1.36"}]
    # The API server refuses every agent pod of this template.
    template = {"spec": {"containers": containers, "restartPolicy": "Sometimes"}}
    await pools.create("rejected", template=template)

    async def held() -> bool:
        message = (await reader.condition("rejected", "Degraded")).get("message", "")
        return "CreateRejected" in message and "new agents are held until" in message

    await until(held, 10, "launches held after rejected creations")
    await pools.patch_spec("rejected", {"template": {"spec": {"restartPolicy": None}}})

    async def observed() -> dict[str, Any]:
        condition = await reader.condition("rejected", "Degraded")
        return condition if condition.get("observedGeneration") == 2 else {}

    degraded = await until(observed, 10, "the fixed template observed")
    assert (degraded["status"], degraded["reason"]) == ("False", "AsExpected")
    await until(lambda: idle_agents(reader, "rejected", 1), 10, "an agent of the new template")
