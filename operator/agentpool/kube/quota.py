"""The per-pool quota of concurrent Kubernetes API connections.

Every API connection made for a pool (pod create/delete, exec sessions, polls,
status writes) holds one of the pool's ``spec.apiConnections.max`` slots. Unlike
an HTTP client's hidden dispatcher queue, this queue is strict FIFO, visible
(``running()`` / ``queued()`` and the metrics), follows the limit live, and fails a
waiter with a message that says what to change. Pure asyncio, no I/O.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from agentpool.metrics import METRICS, Catalogue

__all__ = [
    "ApiQuota",
    "Connection",
    "QuotaRegistry",
    "QuotaTimeout",
    "Waiter",
]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _seconds(delta: timedelta) -> float:
    return round(max(delta.total_seconds(), 0.0), 3)


@dataclass(frozen=True, eq=False)
class Connection:
    """A running API connection holding a slot; identity matters, not the fields."""

    kind: str
    target: str
    started_at: datetime


@dataclass(frozen=True)
class Waiter:
    """An API connection waiting for a slot."""

    kind: str
    target: str
    since: datetime


class QuotaTimeout(Exception):
    """A waiter got no slot within the pool's queue timeout."""

    reason: Final = "ApiQuotaTimeout"

    def __init__(self, message: str, *, pool: str, limit: int, running: int, queued: int) -> None:
        super().__init__(message)
        self.pool = pool
        self.limit = limit
        self.running = running
        self.queued = queued


@dataclass(eq=False)
class _Ticket:
    kind: str
    target: str
    since: datetime
    enqueued_at: float
    future: asyncio.Future[Connection] = field(repr=False)


class ApiQuota:
    """At most ``limit`` concurrent connections for one pool; the rest wait in FIFO order."""

    def __init__(
        self,
        pool: str,
        limit: int,
        *,
        queue_timeout: float | None = 30.0,
        metrics: Catalogue = METRICS,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.pool = pool
        self._metrics = metrics
        self._clock = clock
        self._limit = 0
        self._queue_timeout = queue_timeout
        self._running: dict[Connection, None] = {}
        self._queue: collections.deque[_Ticket] = collections.deque()
        self._waiting = asyncio.Event()
        self.set_limit(limit)

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def queue_timeout(self) -> float | None:
        return self._queue_timeout

    def set_limit(self, limit: int) -> None:
        """Follow a spec change: raising admits waiters now, lowering lets running ones finish."""
        if limit < 1:
            raise ValueError(f"quota limit of pool {self.pool} must be at least 1, not {limit}")
        self._limit = limit
        self._metrics.api_connections_limit.labels(pool=self.pool).set(limit)
        self._admit()

    def set_queue_timeout(self, seconds: float | None) -> None:
        """Applies to requests that start waiting from now on."""
        self._queue_timeout = seconds

    @property
    def running_count(self) -> int:
        return len(self._running)

    @property
    def queued_count(self) -> int:
        return sum(1 for ticket in self._queue if not ticket.future.done())

    def running(self) -> list[Connection]:
        """Connections holding a slot, oldest first."""
        return list(self._running)

    def queued(self) -> list[Waiter]:
        """Connections waiting for a slot, in the order they will get one."""
        return [
            Waiter(ticket.kind, ticket.target, ticket.since)
            for ticket in self._queue
            if not ticket.future.done()
        ]

    def describe(self, now: datetime | None = None) -> dict[str, Any]:
        """A JSON-ready view for ``/debug/connections`` and ``agentpool status``."""
        now = now or self._clock()
        return {
            "pool": self.pool,
            "limit": self._limit,
            "queueTimeoutSeconds": self._queue_timeout,
            "running": [
                {"kind": c.kind, "target": c.target, "ageSeconds": _seconds(now - c.started_at)}
                for c in self.running()
            ],
            "queued": [
                {"kind": w.kind, "target": w.target, "waitingSeconds": _seconds(now - w.since)}
                for w in self.queued()
            ],
        }

    @property
    def has_waiters(self) -> bool:
        """True when someone waits: a long-held slot (an exec session) should yield."""
        return self.queued_count > 0

    async def wait_for_waiters(self) -> None:
        """Return once someone waits for a slot of this pool.

        A holder yields by ``release()`` then ``acquire()``: the new request queues
        behind those already waiting.
        """
        while not self.has_waiters:
            await self._waiting.wait()
            # A waiter may have been admitted or given up between the set and now.
            if not self.has_waiters:
                self._waiting.clear()

    @asynccontextmanager
    async def slot(self, kind: str, target: str) -> AsyncIterator[Connection]:
        """Hold a slot for one API connection, e.g. ``slot("exec", "ns/pod/container")``."""
        connection = await self.acquire(kind, target)
        try:
            yield connection
        finally:
            self.release(connection)

    async def acquire(self, kind: str, target: str) -> Connection:
        """Take a slot (waiting in line if none is free); pair with ``release()``."""
        if not self._queue and len(self._running) < self._limit:
            return self._grant(kind, target, waited=0.0)
        loop = asyncio.get_running_loop()
        ticket = _Ticket(kind, target, self._clock(), loop.time(), loop.create_future())
        self._queue.append(ticket)
        self._admit()  # grants at once if a slot is free after all
        timeout = self._queue_timeout
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.shield(ticket.future)
        except TimeoutError:
            queued = self.queued_count
            self._abandon(ticket)
            self._metrics.api_quota_timeouts.labels(pool=self.pool).inc()
            raise QuotaTimeout(
                self._timeout_message(kind, target, timeout, queued),
                pool=self.pool,
                limit=self._limit,
                running=len(self._running),
                queued=queued,
            ) from None
        except asyncio.CancelledError:
            self._abandon(ticket)
            raise

    def release(self, connection: Connection) -> None:
        """Give a slot back; releasing twice is harmless."""
        if connection not in self._running:
            return
        del self._running[connection]
        self._admit()

    def _grant(self, kind: str, target: str, *, waited: float) -> Connection:
        connection = Connection(kind, target, self._clock())
        self._running[connection] = None
        self._metrics.api_connections.labels(pool=self.pool, kind=kind).inc()
        self._metrics.api_quota_wait_seconds.labels(pool=self.pool).observe(waited)
        self._publish()
        return connection

    def _admit(self) -> None:
        now = asyncio.get_running_loop().time() if self._queue else 0.0
        while self._queue and len(self._running) < self._limit:
            ticket = self._queue.popleft()
            if ticket.future.done():  # cancelled, not yet cleaned up
                continue
            connection = self._grant(ticket.kind, ticket.target, waited=now - ticket.enqueued_at)
            ticket.future.set_result(connection)
        self._queue_changed()

    def _abandon(self, ticket: _Ticket) -> None:
        if ticket.future.done() and not ticket.future.cancelled():
            # Granted in the same instant the waiter gave up: hand the slot on.
            self.release(ticket.future.result())
            return
        ticket.future.cancel()
        with suppress(ValueError):
            self._queue.remove(ticket)
        self._queue_changed()

    def _queue_changed(self) -> None:
        if self.has_waiters:
            self._waiting.set()
        else:
            self._waiting.clear()
        self._publish()

    def _publish(self) -> None:
        self._metrics.api_connections_running.labels(pool=self.pool).set(len(self._running))
        self._metrics.api_connections_queued.labels(pool=self.pool).set(self.queued_count)

    def _timeout_message(self, kind: str, target: str, timeout: float | None, queued: int) -> str:
        return (
            f"Timed out after {timeout:g} s waiting for a Kubernetes API connection slot of "
            f"pool {self.pool} ({kind} {target}): limit {self._limit}, "
            f"{len(self._running)} running, {queued} waiting including this one. "
            f"Raise spec.apiConnections.max to allow more concurrent connections, "
            f"or spec.apiConnections.queueTimeout to wait longer."
        )


class QuotaRegistry:
    """The quotas of all pools, keyed by ``namespace/name``."""

    def __init__(self, metrics: Catalogue = METRICS) -> None:
        self._metrics = metrics
        self._quotas: dict[str, ApiQuota] = {}

    def ensure(self, pool: str, limit: int, queue_timeout: float | None) -> ApiQuota:
        """The pool's quota, created or updated live to the spec's settings."""
        quota = self._quotas.get(pool)
        if quota is None:
            quota = ApiQuota(pool, limit, queue_timeout=queue_timeout, metrics=self._metrics)
            self._quotas[pool] = quota
        else:
            quota.set_limit(limit)
            quota.set_queue_timeout(queue_timeout)
        return quota

    def get(self, pool: str) -> ApiQuota | None:
        return self._quotas.get(pool)

    def remove(self, pool: str) -> None:
        """Forget a deleted pool and its metric series."""
        self._quotas.pop(pool, None)
        self._metrics.forget_pool(pool)

    def __contains__(self, pool: object) -> bool:
        return pool in self._quotas

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._quotas))

    def items(self) -> list[tuple[str, ApiQuota]]:
        return sorted(self._quotas.items())

    def describe(self, now: datetime | None = None) -> list[dict[str, Any]]:
        """Every pool's ``ApiQuota.describe()``, sorted by pool."""
        return [quota.describe(now) for _, quota in self.items()]
