"""The per-pool API connection quota: FIFO, limits, timeouts, cancellation, yield signal."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry

from agentpool.kube.quota import (
    ApiQuota,
    Connection,
    QuotaRegistry,
    QuotaTimeout,
    Waiter,
    reserve_for_requests,
)
from agentpool.metrics import Catalogue

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def metrics() -> Catalogue:
    return Catalogue(CollectorRegistry())


def quota_of(metrics: Catalogue, limit: int, queue_timeout: float | None = 30.0) -> ApiQuota:
    return ApiQuota("ns/pool", limit, queue_timeout=queue_timeout, metrics=metrics)


async def until(condition: Callable[[], bool]) -> None:
    """Let other tasks run until the condition holds (bounded)."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never became true")


def sample(metrics: Catalogue, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, {"pool": "ns/pool", **labels})


async def test_waiters_get_slots_in_arrival_order(metrics: Catalogue) -> None:
    quota = quota_of(metrics, 1)
    holder = await quota.acquire("poll", "first")
    order: list[str] = []

    async def take(name: str) -> None:
        async with quota.slot("exec", name):
            order.append(name)

    tasks = [asyncio.create_task(take(name)) for name in "abcde"]
    await until(lambda: quota.queued_count == 5)
    quota.release(holder)
    await asyncio.gather(*tasks)
    assert order == list("abcde")


async def test_limit_is_never_exceeded_under_contention(metrics: Catalogue) -> None:
    quota = quota_of(metrics, 3)
    peak = 0

    async def work() -> None:
        nonlocal peak
        async with quota.slot("poll", "pod"):
            peak = max(peak, quota.running_count)
            for _ in range(3):
                await asyncio.sleep(0)

    await asyncio.gather(*(work() for _ in range(200)))
    assert peak == 3
    assert (quota.running_count, quota.queued_count) == (0, 0)


async def test_raising_the_limit_admits_waiters_at_once(metrics: Catalogue) -> None:
    quota = quota_of(metrics, 1)
    await quota.acquire("exec", "held")
    waiters = [asyncio.create_task(quota.acquire("poll", str(i))) for i in range(2)]
    await until(lambda: quota.queued_count == 2)
    quota.set_limit(3)
    await asyncio.gather(*waiters)
    assert (quota.running_count, quota.queued_count) == (3, 0)


async def test_lowering_the_limit_lets_running_connections_finish(metrics: Catalogue) -> None:
    quota = quota_of(metrics, 3)
    held = [await quota.acquire("exec", str(i)) for i in range(3)]
    quota.set_limit(1)
    waiter = asyncio.create_task(quota.acquire("poll", "late"))
    await until(lambda: quota.queued_count == 1)
    quota.release(held[0])
    quota.release(held[1])
    assert (quota.running_count, quota.queued_count) == (1, 1)
    quota.release(held[2])
    await waiter
    assert (quota.running_count, quota.queued_count) == (1, 0)


async def test_timeout_names_pool_limit_counts_and_settings(metrics: Catalogue) -> None:
    quota = quota_of(metrics, 1, queue_timeout=0.05)
    await quota.acquire("exec", "ns/agent-1/main")
    with pytest.raises(QuotaTimeout) as caught:
        await quota.acquire("create pod", "ns/agent-2")
    error = caught.value
    assert error.reason == "ApiQuotaTimeout"
    assert (error.limit, error.running, error.queued) == (1, 1, 1)
    message = str(error)
    for part in (
        "pool ns/pool",
        "create pod ns/agent-2",
        "limit 1",
        "1 running",
        "1 waiting",
        "spec.apiConnections.max",
        "spec.apiConnections.queueTimeout",
    ):
        assert part in message
    assert quota.queued_count == 0
    assert sample(metrics, "agentpool_api_quota_timeouts_total") == 1


async def test_cancelled_waiter_leaves_no_trace(metrics: Catalogue) -> None:
    quota = quota_of(metrics, 1)
    holder = await quota.acquire("exec", "held")
    waiter = asyncio.create_task(quota.acquire("poll", "gives up"))
    await until(lambda: quota.queued_count == 1)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    quota.release(holder)
    assert (quota.running_count, quota.queued_count) == (0, 0)


async def test_waiter_cancelled_right_after_its_grant_returns_the_slot(metrics: Catalogue) -> None:
    quota = quota_of(metrics, 1)
    holder = await quota.acquire("exec", "held")
    waiter = asyncio.create_task(quota.acquire("poll", "granted then cancelled"))
    await until(lambda: quota.queued_count == 1)
    quota.release(holder)  # grants the waiter before it resumes
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert quota.running_count == 0


async def test_release_twice_frees_one_slot(metrics: Catalogue) -> None:
    quota = quota_of(metrics, 2)
    first = await quota.acquire("exec", "a")
    await quota.acquire("exec", "b")
    quota.release(first)
    quota.release(first)
    assert quota.running_count == 1


async def test_a_session_holder_learns_that_builds_wait(metrics: Catalogue) -> None:
    quota = quota_of(metrics, 2)  # one session slot, one kept for requests
    assert (quota.session_limit, reserve_for_requests(2)) == (1, 1)
    await quota.acquire_session("ns/agent-1/main")
    signal = asyncio.create_task(quota.wait_until(lambda: quota.session_contended))
    await asyncio.sleep(0)
    assert not signal.done() and not quota.session_contended
    # A request takes the reserved slot: it neither waits nor disturbs the session.
    request = await quota.acquire("status", "ns/step-1")
    assert not signal.done() and not quota.requests_starved
    quota.release(request)
    waiter = asyncio.create_task(quota.acquire_session("ns/agent-2/main"))
    await asyncio.wait_for(signal, timeout=5)
    assert quota.session_contended and quota.sessions_waiting == 1
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)


async def test_introspection_lists_running_and_queued(metrics: Catalogue) -> None:
    quota = ApiQuota("ns/pool", 1, metrics=metrics, clock=lambda: T0)
    await quota.acquire("exec", "ns/agent/main")
    waiter = asyncio.create_task(quota.acquire("status", "ns/step-1"))
    await until(lambda: quota.queued_count == 1)
    running = quota.running()
    assert [(c.kind, c.target, c.started_at) for c in running] == [("exec", "ns/agent/main", T0)]
    assert isinstance(running[0], Connection)
    assert quota.queued() == [Waiter("status", "ns/step-1", T0)]
    assert quota.describe(T0 + timedelta(seconds=2)) == {
        "pool": "ns/pool",
        "limit": 1,
        "sessionLimit": 1,
        "queueTimeoutSeconds": 30.0,
        "running": [{"kind": "exec", "target": "ns/agent/main", "ageSeconds": 2.0}],
        "queued": [{"kind": "status", "target": "ns/step-1", "waitingSeconds": 2.0}],
    }
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)


async def test_gauges_follow_running_queued_and_limit(metrics: Catalogue) -> None:
    quota = quota_of(metrics, 1)
    holder = await quota.acquire("exec", "a")
    waiter = asyncio.create_task(quota.acquire("poll", "b"))
    await until(lambda: quota.queued_count == 1)
    assert sample(metrics, "agentpool_api_connections_running") == 1
    assert sample(metrics, "agentpool_api_connections_queued") == 1
    assert sample(metrics, "agentpool_api_connections_limit") == 1
    quota.release(holder)
    await waiter
    assert sample(metrics, "agentpool_api_connections_queued") == 0
    assert sample(metrics, "agentpool_api_quota_wait_seconds_count") == 2
    assert sample(metrics, "agentpool_api_connections_total", kind="poll") == 1


def test_limit_below_one_is_refused(metrics: Catalogue) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        quota_of(metrics, 0)


async def test_registry_updates_live_and_forgets_deleted_pools(metrics: Catalogue) -> None:
    registry = QuotaRegistry(metrics)
    quota = registry.ensure("ns/pool", 4, 30.0)
    assert registry.ensure("ns/pool", 8, 5.0) is quota
    assert (quota.limit, quota.queue_timeout) == (8, 5.0)
    registry.remove("ns/pool")
    assert "ns/pool" not in registry
    assert sample(metrics, "agentpool_api_connections_limit") is None


async def test_yielding_holder_goes_behind_the_waiters(metrics: Catalogue) -> None:
    quota = quota_of(metrics, 1)  # nothing to reserve: the one slot is shared
    order: list[str] = []
    session = await quota.acquire_session("session")

    async def other() -> None:
        async with quota.slot("create pod", "agent"):
            order.append("other")

    waiter = asyncio.create_task(other())
    await quota.wait_until(lambda: quota.requests_starved)
    quota.release(session)
    session = await quota.acquire_session("session")
    order.append("session")
    await waiter
    assert order == ["other", "session"]


@pytest.mark.parametrize(("limit", "reserved"), [(1, 0), (2, 1), (4, 1), (16, 2), (32, 4)])
def test_an_eighth_of_the_limit_is_kept_for_requests(limit: int, reserved: int) -> None:
    assert reserve_for_requests(limit) == reserved


async def test_sessions_stay_within_their_share_and_requests_within_the_limit(
    metrics: Catalogue,
) -> None:
    quota = quota_of(metrics, 8)  # 7 session slots, 1 kept for requests
    sessions = [await quota.acquire_session(f"agent-{i}") for i in range(7)]
    late = asyncio.create_task(quota.acquire_session("agent-7"))
    await until(lambda: quota.sessions_waiting == 1)
    assert quota.running_count == 7
    request = await quota.acquire("status", "step")  # the reserve: at once
    second = asyncio.create_task(quota.acquire("status", "step-2"))
    await until(lambda: quota.requests_waiting == 1)
    assert quota.running_count == 8 and not quota.requests_starved  # one request runs
    quota.release(sessions[0])
    # The freed slot goes to the waiting request first; the session waits for the next one.
    await second
    assert quota.sessions_waiting == 1 and quota.running_count == 8
    quota.release(request)
    await late
    assert quota.sessions_running == 7 and quota.running_count == 8


async def test_builds_resuming_a_detached_step_go_ahead_of_new_builds(
    metrics: Catalogue,
) -> None:
    quota = quota_of(metrics, 2)  # one session slot
    holder = await quota.acquire_session("running")
    order: list[str] = []

    async def session(name: str, *, resuming: bool = False) -> None:
        connection = await quota.acquire_session(name, resuming=resuming)
        order.append(name)
        quota.release(connection)

    tasks = [asyncio.create_task(session("new-1"))]
    await until(lambda: quota.sessions_waiting == 1)
    tasks.append(asyncio.create_task(session("resumed-1", resuming=True)))
    await until(lambda: quota.sessions_waiting == 2)
    tasks.append(asyncio.create_task(session("resumed-2", resuming=True)))
    await until(lambda: quota.sessions_waiting == 3)
    tasks.append(asyncio.create_task(session("new-2")))
    await until(lambda: quota.sessions_waiting == 4)
    quota.release(holder)
    await asyncio.gather(*tasks)
    assert order == ["resumed-1", "resumed-2", "new-1", "new-2"]


async def test_lowering_the_limit_asks_sessions_over_it_to_hand_over(metrics: Catalogue) -> None:
    quota = quota_of(metrics, 16)  # 14 session slots
    for i in range(10):
        await quota.acquire_session(f"agent-{i}")
    assert not quota.session_contended
    quota.set_limit(8)  # 7 session slots now: three sessions too many
    assert quota.session_contended and quota.sessions_running == 10


async def test_a_session_that_waits_too_long_is_told_about_the_session_share(
    metrics: Catalogue,
) -> None:
    quota = quota_of(metrics, 2, queue_timeout=0.01)
    await quota.acquire_session("agent-1")
    with pytest.raises(QuotaTimeout) as caught:
        await quota.acquire_session("agent-2")
    message = str(caught.value)
    assert "limit 2" in message
    assert "exec sessions may hold 1 of them and 1 are open" in message
    assert "Raise spec.apiConnections.max" in message
