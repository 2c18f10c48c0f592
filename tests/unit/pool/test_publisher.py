"""The pool status publisher retries a failed write after the wait its owner's back-off gives."""

from __future__ import annotations

import asyncio
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException

from agentpool.pool.publisher import PoolStatusPublisher


async def test_a_failed_write_is_retried_with_the_latest_status_after_the_back_off() -> None:
    written: list[dict[str, Any]] = []
    failures: list[int | None] = []
    recovered = asyncio.Event()

    async def write(status: dict[str, Any]) -> None:
        if not failures:
            failures.append(None)
            raise ApiException(status=503, reason="Service Unavailable")
        written.append(status)

    def failed(error: BaseException) -> float:
        failures[-1] = getattr(error, "status", None)
        writer.submit({"agents": 2})  # a newer status arrives meanwhile: it wins
        return 0.05

    writer = PoolStatusPublisher("ns/p", write, 0.0, failed=failed, succeeded=recovered.set)
    writer.submit({"agents": 1})
    async with asyncio.timeout(5):
        await recovered.wait()
    await writer.close()

    assert failures == [503]
    assert written == [{"agents": 2}]


async def test_a_gone_pool_ends_the_writer_without_retrying() -> None:
    calls = 0

    async def write(status: dict[str, Any]) -> None:
        nonlocal calls
        calls += 1
        raise ApiException(status=404, reason="Not Found")

    def failed(error: BaseException) -> float:
        raise AssertionError("a 404 is no failure to back off from")

    writer = PoolStatusPublisher("ns/p", write, 0.0, failed=failed, succeeded=lambda: None)
    writer.submit({"agents": 1})
    assert writer._task is not None
    async with asyncio.timeout(5):
        await writer._task

    assert calls == 1
