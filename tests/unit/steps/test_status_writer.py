"""The status writer's `written`: a runner waits for a step's placement to be on the server."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from kubernetes_asyncio.client.exceptions import ApiException
from prometheus_client import CollectorRegistry

from agentpool.kube.quota import ApiQuota, QuotaTimeout
from agentpool.metrics import Catalogue
from agentpool.steps.status import StepStatusWriter

Patches = list[tuple[str, dict[str, Any]]]


def writer_with(quota: ApiQuota, patches: Patches) -> StepStatusWriter:
    async def patch(namespace: str, name: str, fields: dict[str, Any]) -> None:
        patches.append((name, fields))

    return StepStatusWriter(patch, lambda pool: quota)


async def test_written_returns_once_the_merged_updates_are_on_the_server() -> None:
    patches: Patches = []
    writer = writer_with(ApiQuota("ns/p", 2, metrics=Catalogue(CollectorRegistry())), patches)

    writer.update("ns", "s", "ns/p", {"phase": "Queued"}, delay=30.0)
    writer.update("ns", "s", "ns/p", {"agent": "a"}, delay=0.0)  # brings the write forward
    await writer.written("ns", "s")

    assert patches == [("s", {"phase": "Queued", "agent": "a"})]


async def test_written_raises_when_the_quota_starves_the_write_which_goes_on() -> None:
    patches: Patches = []
    quota = ApiQuota("ns/p", 1, queue_timeout=0.05, metrics=Catalogue(CollectorRegistry()))
    writer = writer_with(quota, patches)
    holder = await quota.acquire("exec", "ns/pod/main")

    writer.update("ns", "s", "ns/p", {"agent": "a"})
    with pytest.raises(QuotaTimeout, match="limit 1, 1 running"):
        await writer.written("ns", "s")
    quota.release(holder)
    await writer.written("ns", "s")  # a starved attempt before the call does not count

    assert patches == [("s", {"agent": "a"})]


async def test_a_throttled_write_waits_for_the_servers_retry_after() -> None:
    loop = asyncio.get_running_loop()
    attempts: list[float] = []

    async def patch(namespace: str, name: str, fields: dict[str, Any]) -> None:
        attempts.append(loop.time())
        if len(attempts) == 1:
            error = ApiException(status=429, reason="Too Many Requests")
            error.headers = {"Retry-After": "1"}  # type: ignore[assignment]
            raise error

    writer = StepStatusWriter(patch, lambda pool: None)
    writer.update("ns", "s", "ns/p", {"phase": "Running"})
    await writer.written("ns", "s")

    assert len(attempts) == 2
    # Our own back-off would have retried after 0.05 s at most: the server's word wins.
    assert attempts[1] - attempts[0] >= 1.0
