"""Each kubelet profile of the sandbox against the AgentPool lifecycle, in-process operator."""

from __future__ import annotations

import dataclasses
from typing import Any

import aiohttp

from agentpool.pool.manifest import POOL_LABEL


async def status_of(reader: Any, pool: str) -> dict[str, Any]:
    return (await reader.pool(pool)).get("status") or {}


async def counts(reader: Any, pool: str) -> dict[str, int]:
    return (await status_of(reader, pool)).get("agents") or {}


async def metric(op: Any, name: str, pool: str, **labels: str) -> float:
    """One sample of the operator's /metrics, read over HTTP (0 when absent)."""
    wanted = {"pool": f"default/{pool}", **labels}
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{op.runtime.telemetry.url}/metrics") as response,
    ):
        text = await response.text()
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        label_text, _, value = line[len(name) + 1 :].rpartition("} ")
        found = dict(part.split("=", 1) for part in label_text.split(","))
        if {k: v.strip('"') for k, v in found.items()} == wanted:
            return float(value)
    return 0.0


def waiting_state(pod: dict[str, Any]) -> dict[str, Any]:
    statuses = (pod.get("status") or {}).get("containerStatuses") or [{}]
    return (statuses[0].get("state") or {}).get("waiting") or {}


async def test_standard_agents_start_and_are_reported(
    operator: Any, pools: Any, reader: Any, until: Any
) -> None:
    await pools.create("std", minIdle=2)

    async def two_idle() -> bool:
        return (await counts(reader, "std")).get("idle") == 2

    await until(two_idle, 10, "two idle agents")
    ready = await reader.condition("std", "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "AgentsReady")
    agents = await reader.agents("std")
    assert len(agents) == 2
    assert all(a["metadata"]["labels"][POOL_LABEL] == "std" for a in agents)
    assert all(a["metadata"]["ownerReferences"][0]["name"] == "std" for a in agents)

    async def events_posted() -> list[str]:
        reasons = await reader.reasons("std")
        return reasons if reasons.count("AgentReady") == 2 else []

    reasons = await until(events_posted, 10, "AgentReady events")
    assert reasons.count("AgentLaunched") == 2


async def test_virtual_kubelet_agents_all_start_with_toleration(
    operator: Any, pools: Any, reader: Any, until: Any
) -> None:
    launches = 25
    await pools.create("vk", profile="virtual-kubelet", minIdle=launches, maxAgents=launches)

    async def all_idle() -> bool:
        return (await counts(reader, "vk")).get("idle") == launches

    await until(all_idle, 30, f"{launches} idle agents")
    assert len(await reader.agents("vk")) == launches
    assert await metric(operator, "agentpool_agent_launches_total", "vk", result="failed") == 0
    assert await metric(operator, "agentpool_agent_launches_total", "vk", result="ready") == (
        launches
    )
    pending = await metric(operator, "agentpool_agent_virtual_kubelet_pending_total", "vk")
    # 14 pods in 15 go through the window; those the operator saw there are counted (one
    # seen late, already Running, is an ordinary launch), each with its AgentReady Event.
    assert 1 <= pending <= launches

    async def pending_events() -> bool:
        events = [e for e in await reader.events("vk") if e["reason"] == "AgentReady"]
        return sum("still Pending" in e["message"] for e in events) == pending

    await until(pending_events, 10, f"{pending:g} AgentReady Events naming the Pending phase")
    assert "AgentFailed" not in await reader.reasons("vk")


async def test_virtual_kubelet_fails_agents_without_toleration(
    operator: Any, pools: Any, reader: Any, until: Any
) -> None:
    await pools.create(
        "vk-strict",
        profile="virtual-kubelet",
        minIdle=3,
        readiness={"tolerateVirtualKubeletPending": False},
    )

    async def failed_events() -> list[dict[str, Any]]:
        events = [e for e in await reader.events("vk-strict") if e["reason"] == "AgentFailed"]
        return events if len(events) >= 2 else []

    events = await until(failed_events, 20, "agents failed for phase Pending")
    assert all("PodNotRunning" in e["message"] for e in events)
    assert await metric(operator, "agentpool_agent_launches_total", "vk-strict", result="failed")


async def test_image_pull_backoff_fails_after_the_grace_quoting_the_container(
    start_operator: Any, operator_config: Any, pools: Any, reader: Any, until: Any
) -> None:
    await start_operator(dataclasses.replace(operator_config, image_pull_grace=3.0))
    await pools.create("pull", profile="image-pull-backoff")

    async def pulling_and_starting() -> bool:
        agents = await reader.agents("pull")
        pulling = bool(agents) and waiting_state(agents[0]).get("reason") == "ErrImagePull"
        return pulling and (await counts(reader, "pull")).get("starting") == 1

    # Within the grace the pull error is a starting agent, not a failure.
    await until(pulling_and_starting, 10, "an agent starting through ErrImagePull")
    assert "AgentFailed" not in await reader.reasons("pull")

    async def failed() -> list[dict[str, Any]]:
        return [e for e in await reader.events("pull") if e["reason"] == "AgentFailed"]

    event = (await until(failed, 15, "AgentFailed after the grace"))[0]
    assert "ErrImagePull" in event["message"] or "ImagePullBackOff" in event["message"]
    assert "busybox:1.36" in event["message"]


async def test_crash_loop_agent_fails_and_is_replaced(
    operator: Any, pools: Any, reader: Any, until: Any
) -> None:
    await pools.create("crash", profile="crash-loop")

    async def failed_then_replaced() -> tuple[dict[str, Any], str] | None:
        events = await reader.events("crash")
        failed = {e["message"].split()[2]: e for e in events if e["reason"] == "AgentFailed"}
        for event in events:
            if event["reason"] == "AgentReplaced":
                pod = event["message"].split()[3].rstrip(":")
                if pod in failed:
                    return failed[pod], pod
        return None

    failure, first = await until(failed_then_replaced, 15, "a failed agent replaced")
    assert "ContainerTerminated" in failure["message"] or "CrashLoopBackOff" in (failure["message"])

    async def new_agent() -> list[dict[str, Any]]:
        return [a for a in await reader.agents("crash") if a["metadata"]["name"] != first]

    await until(new_agent, 10, "a replacement agent pod")


async def test_unschedulable_agent_keeps_waiting_and_is_reported(
    operator: Any, pools: Any, reader: Any, until: Any
) -> None:
    await pools.create("nofit", profile="unschedulable")

    async def degraded() -> dict[str, Any]:
        condition = await reader.condition("nofit", "Degraded")
        return condition if condition.get("reason") == "AgentsUnschedulable" else {}

    condition = await until(degraded, 10, "Degraded AgentsUnschedulable")
    assert condition["status"] == "True"
    assert "Insufficient cpu" in condition["message"]
    assert (await counts(reader, "nofit")).get("starting") == 1
    assert (await reader.condition("nofit", "Ready"))["status"] == "False"
    assert len(await reader.agents("nofit")) == 1
    assert "AgentFailed" not in await reader.reasons("nofit")


async def test_startup_timeout_fails_saying_what_it_waited_for(
    operator: Any, pools: Any, reader: Any, until: Any
) -> None:
    await pools.create("slow", profile="unschedulable", startupTimeout="1s")

    async def failed() -> list[dict[str, Any]]:
        return [e for e in await reader.events("slow") if e["reason"] == "AgentFailed"]

    event = (await until(failed, 10, "AgentFailed after startupTimeout"))[0]
    assert "StartupTimeout" in event["message"]
    assert "not started after 1s" in event["message"]
    assert "not scheduled" in event["message"] or "node" in event["message"]


async def test_repeated_launch_failures_hold_new_agents(
    operator: Any, pools: Any, reader: Any, until: Any
) -> None:
    await pools.create("doomed", profile="crash-loop")

    async def held() -> dict[str, Any]:
        condition = await reader.condition("doomed", "Degraded")
        return condition if "held until" in condition.get("message", "") else {}

    condition = await until(held, 15, "creations held after repeated launch failures")
    assert condition["status"] == "True"
    assert "agent launch(es) failed in a row" in condition["message"]
