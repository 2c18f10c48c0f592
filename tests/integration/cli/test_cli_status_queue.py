"""`agentpool status` shows a queued API connection while a pool's quota is saturated.

The operator's sessions hold a slot only while they talk to the container (a long step is
polled, not held open), so a saturated quota is transient in practice. To observe one
deterministically the test holds the pool's only slot itself, as a long exec would, while a
build waits behind it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

from cli_cluster import agentpool, create, phase, pool_body, step_body
from kubernetes_asyncio.client import ApiClient

from agentpool.kube.quota import ApiQuota
from agentpool.runtime import Runtime

POOL = "default/narrow"
HOLDER = "default/long-step/agent"
QUEUED_ROW = re.compile(r"^\s*queued\s*│\s*\S+\s*│\s*\S+\s*│\s*\d", re.MULTILINE)
RUNNING_ROW = re.compile(r"^\s*running\s*│\s*exec\s*│\s*" + re.escape(HOLDER), re.MULTILINE)


async def test_status_shows_a_queued_connection_behind_a_held_slot(
    operator: Any, kube_api: ApiClient, until: Callable[..., Awaitable[Any]]
) -> None:
    runtime: Runtime = operator.runtime
    url = runtime.telemetry.url
    await create(kube_api, pool_body("narrow", apiConnections={"max": 1, "queueTimeout": "60s"}))

    async def idle_quota() -> ApiQuota | None:
        quota = runtime.quotas.get(POOL)
        return quota if quota is not None and not quota.describe()["running"] else None

    quota: ApiQuota = await until(idle_quota, 15.0, "the pool's quota, idle")
    async with quota.slot("exec", HOLDER):
        await create(kube_api, step_body("waiting-echo", "narrow", "echo hi", build="waiting"))

        async def queued_in_json() -> dict[str, Any] | None:
            done = await agentpool("status", "narrow", "--url", url, "--json")
            assert done.code == 0, done.err
            (entry,) = json.loads(done.out)["pools"]
            return entry if entry["queued"] else None

        entry = await until(queued_in_json, 15.0, "a queued connection in the JSON")
        table = await agentpool("status", "--url", url)

    assert entry["pool"] == POOL
    assert entry["limit"] == 1
    assert [c["target"] for c in entry["running"]] == [HOLDER]
    assert entry["queued"][0]["waitingSeconds"] >= 0
    assert table.code == 0, table.err
    assert f"pool {POOL}" in table.out
    assert "API connections 1/1" in table.out
    assert RUNNING_ROW.search(table.out), table.out
    assert QUEUED_ROW.search(table.out), table.out

    async def succeeded() -> bool:
        return await phase(kube_api, "waiting-echo") == "Succeeded"

    await until(succeeded, 20.0, "the waiting build to run once the slot is free")
