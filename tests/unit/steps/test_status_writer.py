"""The status writer's `written`: a runner waits for a step's placement to be on the server."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from agentpool.kube.quota import ApiQuota, QuotaTimeout
from agentpool.metrics import Catalogue
from agentpool.steps.status import StatusWriter

Patches = list[tuple[str, dict[str, Any]]]


def writer_with(quota: ApiQuota, patches: Patches) -> StatusWriter:
    async def patch(namespace: str, name: str, fields: dict[str, Any]) -> None:
        patches.append((name, fields))

    return StatusWriter(patch, lambda pool: quota)


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
