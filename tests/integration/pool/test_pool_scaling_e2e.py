"""Scaling on the sandbox: minIdle, maxAgents, idleTimeout, ephemeral, replacement, rolling."""

from __future__ import annotations

from typing import Any

import pytest

from agentpool.pool.lease import AgentLease, LeaseTimeout
from agentpool.pool.manifest import TEMPLATE_HASH_LABEL


async def counts(reader: Any, pool: str) -> dict[str, int]:
    return ((await reader.pool(pool)).get("status") or {}).get("agents") or {}


def names(pods: list[dict[str, Any]]) -> set[str]:
    return {p["metadata"]["name"] for p in pods}


async def acquire(op: Any, pool: str, build: str, within: float = 10.0) -> AgentLease:
    lease: AgentLease = await op.call(
        lambda: op.runtime.pools.acquire(f"default/{pool}", build, timeout=within)
    )
    return lease


async def release(op: Any, lease: AgentLease) -> None:
    async def give_back() -> None:
        op.runtime.pools.release(lease)

    await op.call(give_back)


async def test_pod_deleted_from_outside_is_replaced(
    operator: Any, pools: Any, reader: Any, until: Any
) -> None:
    await pools.create("outside", minIdle=2)

    async def two_idle() -> set[str]:
        ok = (await counts(reader, "outside")).get("idle") == 2
        pods = names(await reader.agents("outside"))
        return pods if ok and len(pods) == 2 else set()

    before = await until(two_idle, 10, "two idle agents")
    victim = sorted(before)[0]
    await pools.delete_pod(victim)

    async def replaced() -> set[str]:
        after = await two_idle()
        return after if after and victim not in after else set()

    after = await until(replaced, 10, "a replacement agent")
    assert len(after) == 2

    async def reported() -> bool:
        events = [e for e in await reader.events("outside") if e["reason"] == "AgentReplaced"]
        return any(victim in e["message"] and "outside" in e["message"] for e in events)

    await until(reported, 10, "an AgentReplaced Event naming the deleted pod")


async def test_busy_agent_is_replaced_to_keep_min_idle(
    operator: Any, pools: Any, reader: Any, until: Any
) -> None:
    await pools.create("warm", minIdle=1)
    lease = await acquire(operator, "warm", "build-1")

    async def one_busy_one_idle() -> bool:
        c = await counts(reader, "warm")
        return (c.get("busy"), c.get("idle")) == (1, 1)

    await until(one_busy_one_idle, 10, "a busy agent and a fresh idle one")
    assert lease.pod_name in names(await reader.agents("warm"))


async def test_max_agents_caps_the_pool_while_builds_wait(
    operator: Any, pools: Any, reader: Any, until: Any
) -> None:
    await pools.create("capped", minIdle=0, maxAgents=2)
    first = await acquire(operator, "capped", "build-1")
    second = await acquire(operator, "capped", "build-2")
    assert first.pod_name != second.pod_name

    with pytest.raises(LeaseTimeout, match="maxAgents 2"):
        await acquire(operator, "capped", "build-3", within=1.0)
    assert len(await reader.agents("capped")) == 2
    assert (await counts(reader, "capped")).get("busy") == 2


async def test_idle_timeout_reaps_agents_above_min_idle(
    operator: Any, pools: Any, reader: Any, until: Any
) -> None:
    await pools.create("reap", minIdle=1, idleTimeout="1s")
    leases = [await acquire(operator, "reap", f"build-{n}") for n in range(3)]
    for lease in leases:
        await release(operator, lease)

    async def one_left() -> bool:
        idle = (await counts(reader, "reap")).get("idle")
        return len(await reader.agents("reap")) == 1 and idle == 1

    # Three leased agents plus the one kept warm meanwhile: three go.
    await until(one_left, 10, "idle agents above minIdle reaped")

    async def removals() -> list[dict[str, Any]]:
        removed = [e for e in await reader.events("reap") if e["reason"] == "AgentRemoved"]
        return removed if len(removed) == 3 else []

    removed = await until(removals, 10, "three AgentRemoved Events")
    assert all("IdleTimeout" in e["message"] for e in removed)


async def test_ephemeral_agent_is_deleted_after_its_build(
    operator: Any, pools: Any, reader: Any, until: Any
) -> None:
    await pools.create("once", minIdle=1, ephemeral=True)
    lease = await acquire(operator, "once", "build-1")
    await release(operator, lease)

    async def gone_and_rewarmed() -> bool:
        agents = names(await reader.agents("once"))
        idle = (await counts(reader, "once")).get("idle")
        return lease.pod_name not in agents and idle == 1

    await until(gone_and_rewarmed, 10, "the used agent deleted and a fresh one idle")

    async def reported() -> bool:
        removed = [e for e in await reader.events("once") if e["reason"] == "AgentRemoved"]
        return any(lease.pod_name in e["message"] and "Ephemeral" in e["message"] for e in removed)

    await until(reported, 10, "an AgentRemoved Event saying Ephemeral")


async def test_template_change_rolls_idle_agents_but_not_busy_ones(
    operator: Any, pools: Any, reader: Any, until: Any
) -> None:
    created = await pools.create("roll", minIdle=2, maxAgents=4)
    template = created["spec"]["template"]

    async def two_idle() -> bool:
        return (await counts(reader, "roll")).get("idle") == 2

    await until(two_idle, 10, "two idle agents")
    lease = await acquire(operator, "roll", "build-1")
    old_hash = {
        p["metadata"]["name"]: p["metadata"]["labels"][TEMPLATE_HASH_LABEL]
        for p in await reader.agents("roll")
    }[lease.pod_name]
    template["metadata"]["labels"] = {"release": "two"}
    await pools.patch_spec("roll", {"template": template})

    async def rolled() -> list[dict[str, Any]]:
        pods = await reader.agents("roll")
        old = [p for p in pods if p["metadata"]["labels"][TEMPLATE_HASH_LABEL] == old_hash]
        settled = (await counts(reader, "roll")).get("idle") == 2
        only_busy_left = names(old) == {lease.pod_name}
        return pods if settled and only_busy_left and len(pods) == 3 else []

    pods = await until(rolled, 15, "idle agents rolled, the busy one kept")
    assert all(
        p["metadata"]["labels"].get("release") == "two"
        for p in pods
        if p["metadata"]["name"] != lease.pod_name
    )
    assert not lease.lost.is_set()

    await release(operator, lease)

    async def busy_one_rolled() -> bool:
        return lease.pod_name not in names(await reader.agents("roll"))

    await until(busy_one_rolled, 10, "the released old-template agent rolled")
