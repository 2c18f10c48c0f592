"""A pool whose pod creations fail at the API server backs off, says so, and recovers.

Faults come from the sandbox (`/sandbox/v1/faults`); creations are counted by the sandbox
(`/sandbox/v1/stats`, the operator's own client only).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from agentpool import USER_AGENT
from agentpool.pool.manifest import TEMPLATE_HASH_LABEL
from agentpool_sandbox.cluster import Sandbox

POOL = "flaky"
FAULT_WINDOW = 3.0  # seconds of failing creations (the issue measured 10 s)


@pytest.fixture
async def http(cluster: Sandbox) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(cluster.url) as session:
        yield session


async def put_faults(http: aiohttp.ClientSession, doc: dict[str, Any]) -> None:
    async with http.put("/sandbox/v1/faults", json=doc) as response:
        assert response.status == 200, await response.text()


async def clear_faults(http: aiohttp.ClientSession) -> None:
    async with http.delete("/sandbox/v1/faults") as response:
        assert response.status == 200


async def pod_requests(http: aiohttp.ClientSession, verb: str = "create") -> int:
    """Pod requests of that verb the operator has sent so far (answered or not)."""
    async with http.get("/sandbox/v1/stats") as response:
        stats = await response.json()
    mine = stats["requests"]["byClient"].get(USER_AGENT) or {}
    return int(((mine.get("byResource") or {}).get("pods") or {}).get(verb, 0))


async def pod_creates(http: aiohttp.ClientSession) -> int:
    return await pod_requests(http, "create")


def fault(code: int, verb: str = "create", **extra: Any) -> dict[str, Any]:
    rule = {"code": code, "rate": 1, "verbs": [verb], "resources": ["pods"], **extra}
    return {"errors": [rule]}


async def idle_agents(reader: Any, wanted: int) -> bool:
    status = (await reader.pool(POOL)).get("status") or {}
    idle = (status.get("agents") or {}).get("idle")
    return idle == wanted and len(await reader.agents(POOL)) == wanted


async def warnings(reader: Any, reason: str) -> list[dict[str, Any]]:
    return [
        e for e in await reader.events(POOL) if e["reason"] == reason and e["type"] == "Warning"
    ]


@pytest.mark.usefixtures("operator")
async def test_failing_creations_back_off_degrade_the_pool_and_recover(
    pools: Any, reader: Any, until: Any, http: Any, caplog: Any
) -> None:
    caplog.set_level(logging.INFO, logger="agentpool.pool.controller")
    await put_faults(http, fault(500))
    started = time.monotonic()
    await pools.create(POOL, minIdle=3, maxAgents=5)

    async def degraded() -> dict[str, Any]:
        condition = await reader.condition(POOL, "Degraded")
        return condition if condition.get("status") == "True" else {}

    condition = await until(degraded, 10, "Degraded while creations fail")
    assert condition["reason"] == "AgentCreateFailing"
    # The API server's own words.
    assert "Internal error occurred: injected by the sandbox (faults)" in condition["message"]
    ready = await reader.condition(POOL, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "AgentCreateFailing")
    event = (await until(lambda: warnings(reader, "AgentCreateFailed"), 10, "a Warning"))[0]
    assert "injected by the sandbox" in event["message"]

    # Let the faults last out their window, then count what they cost.
    await until(lambda: time.monotonic() - started >= FAULT_WINDOW, 10, "the fault window")
    creates = await pod_creates(http)
    await clear_faults(http)

    # 3 at once, then one probe at a time with exponential back-off: a handful, not
    # thousands (the issue saw 10 032 in 10 s); the target is 30 in 10 s.
    assert 1 <= creates <= 12, creates
    assert "AgentFailed" not in await reader.reasons(POOL)
    # Events and logs are rate-limited: one report, not one per attempt.
    assert len(await warnings(reader, "AgentCreateFailed")) <= 2
    failures = [r for r in caplog.records if "creating agent pods failed" in r.getMessage()]
    assert 1 <= len(failures) <= 2, [r.getMessage() for r in failures]

    await until(lambda: idle_agents(reader, 3), 30, "three idle agents after the faults")

    async def recovered() -> bool:
        degraded = await reader.condition(POOL, "Degraded")
        ready = await reader.condition(POOL, "Ready")
        return bool(degraded.get("status") == "False" and ready.get("status") == "True")

    await until(recovered, 10, "Degraded False and Ready True again")


@pytest.mark.usefixtures("operator")
async def test_throttled_creations_wait_for_retry_after_and_are_no_launch_failure(
    pools: Any, reader: Any, until: Any, http: Any
) -> None:
    retry_after = 2
    await put_faults(http, fault(429, retryAfterSeconds=retry_after))
    started = time.monotonic()
    await pools.create(POOL, minIdle=3, maxAgents=5)

    async def throttled() -> dict[str, Any]:
        condition = await reader.condition(POOL, "Degraded")
        return condition if condition.get("reason") == "AgentCreateThrottled" else {}

    condition = await until(throttled, 10, "Degraded while creations are throttled")
    assert condition["status"] == "True"
    assert "Too many requests" in condition["message"]
    await until(lambda: time.monotonic() - started >= FAULT_WINDOW, 10, "the fault window")
    creates = await pod_creates(http)
    elapsed = time.monotonic() - started
    await clear_faults(http)

    # The first 3 at once, then no more than one per Retry-After.
    assert 1 <= creates <= 3 + int(elapsed // retry_after) + 1, (creates, elapsed)
    await until(lambda: idle_agents(reader, 3), 30, "three idle agents after the throttling")
    reasons = await reader.reasons(POOL)
    assert "AgentFailed" not in reasons
    assert "AgentCreateThrottled" in reasons
    degraded = await reader.condition(POOL, "Degraded")
    assert degraded["status"] == "False"


@pytest.mark.usefixtures("operator")
async def test_failing_deletions_back_off_and_the_roll_completes_afterwards(
    pools: Any, reader: Any, until: Any, http: Any
) -> None:
    created = await pools.create(POOL, minIdle=2, maxAgents=4)
    await until(lambda: idle_agents(reader, 2), 10, "two idle agents")
    old_hash = (await reader.agents(POOL))[0]["metadata"]["labels"][TEMPLATE_HASH_LABEL]
    deletes_before = await pod_requests(http, "delete")
    await put_faults(http, fault(500, "delete"))
    template = created["spec"]["template"]
    template["metadata"]["labels"] = {"release": "two"}
    await pools.patch_spec(POOL, {"template": template})

    async def deletes_failing() -> int:
        return await pod_requests(http, "delete") - deletes_before

    await until(deletes_failing, 15, "the old agents' deletions failing")
    started = time.monotonic()
    await until(lambda: time.monotonic() - started >= FAULT_WINDOW, 10, "the fault window")
    deletes = await deletes_failing()
    # Both old agents are deleted at once, then retried with back-off (0.1 s doubling):
    # a handful of attempts, not one per pass of the pool's loop.
    assert deletes <= 16, deletes
    # The old agents stay counted meanwhile: no surplus agent beyond the two new ones.
    assert len(await reader.agents(POOL)) <= 4
    await clear_faults(http)

    async def rolled() -> bool:
        pods = await reader.agents(POOL)
        hashes = {p["metadata"]["labels"][TEMPLATE_HASH_LABEL] for p in pods}
        return len(pods) == 2 and old_hash not in hashes and await idle_agents(reader, 2)

    await until(rolled, 40, "the old agents deleted after the faults")
