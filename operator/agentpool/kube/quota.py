"""The per-pool quota of concurrent Kubernetes API connections.

Every API connection made for a pool (pod create/delete, exec sessions, polls,
status writes) holds one of the pool's ``spec.apiConnections.max`` slots. Unlike
an HTTP client's hidden dispatcher queue, this queue is strict FIFO, visible
(``running()`` / ``queued()`` and the metrics), follows the limit live, and fails a
waiter with a message that says what to change. Pure asyncio, no I/O.

Two kinds of holders share the slots (docs/sessions.md has the reasoning):

- **requests** (``acquire``/``slot``): short calls (status writes, Events, pod create,
  delete and list, log reads). They may take any free slot and are admitted first.
- **sessions** (``acquire_session``/``session_slot``): exec sessions, held for a whole
  build. They may hold at most ``session_limit`` slots, ``limit`` less a reserve
  (`reserve_for_requests`) that only requests use, so that a status write never waits for a
  session to end and never makes one yield. With more builds than session slots, builds
  wait FIFO for a session and sessions change hands at build boundaries
  (``session_contended`` tells a holder that someone waits).

Never more than ``limit`` connections run, sessions and requests together.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from agentpool.metrics import METRICS, Catalogue
from agentpool.timestamps import now

__all__ = [
    "ApiQuota",
    "Connection",
    "QuotaRegistry",
    "QuotaTimeout",
    "Waiter",
]


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


SESSION: Final = "exec"


def reserve_for_requests(limit: int) -> int:
    """Slots that only short requests may use: an eighth of the limit, at least one.

    With a limit of 1 nothing can be reserved: the one slot is shared and a session yields it
    when requests starve (`ApiQuota.requests_starved`).
    """
    return 0 if limit <= 1 else max(1, limit // 8)


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
    session: bool = False
    front: bool = False


class ApiQuota:
    """At most ``limit`` concurrent connections for one pool; the rest wait in FIFO order."""

    def __init__(
        self,
        pool: str,
        limit: int,
        *,
        queue_timeout: float | None = 30.0,
        metrics: Catalogue = METRICS,
        clock: Callable[[], datetime] = now,
    ) -> None:
        self.pool = pool
        self._metrics = metrics
        self._clock = clock
        self._limit = 0
        self._queue_timeout = queue_timeout
        self._running: dict[Connection, None] = {}
        self._sessions: set[Connection] = set()
        self._requests: collections.deque[_Ticket] = collections.deque()
        self._session_queue: collections.deque[_Ticket] = collections.deque()
        self._changed = asyncio.Event()
        self.set_limit(limit)

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def session_limit(self) -> int:
        """How many exec sessions may be open at once: the limit less the requests' reserve."""
        return self._limit - reserve_for_requests(self._limit)

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
        return self.requests_waiting + self.sessions_waiting

    @property
    def sessions_running(self) -> int:
        return len(self._sessions)

    @property
    def sessions_waiting(self) -> int:
        return sum(1 for ticket in self._session_queue if not ticket.future.done())

    @property
    def requests_waiting(self) -> int:
        return sum(1 for ticket in self._requests if not ticket.future.done())

    def running(self) -> list[Connection]:
        """Connections holding a slot, oldest first."""
        return list(self._running)

    def queued(self) -> list[Waiter]:
        """Connections waiting for a slot, in the order they will get one (requests first)."""
        return [
            Waiter(ticket.kind, ticket.target, ticket.since)
            for ticket in (*self._requests, *self._session_queue)
            if not ticket.future.done()
        ]

    def describe(self, now: datetime | None = None) -> dict[str, Any]:
        """A JSON-ready view for ``/debug/connections`` and ``agentpool status``."""
        now = now or self._clock()
        return {
            "pool": self.pool,
            "limit": self._limit,
            "sessionLimit": self.session_limit,
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
    def session_contended(self) -> bool:
        """Builds wait for a session slot, or the limit was lowered below the sessions open:
        an open session should change hands at its build's next boundary."""
        return self.sessions_waiting > 0 or len(self._sessions) > self.session_limit

    @property
    def requests_starved(self) -> bool:
        """Requests wait and none runs: sessions hold every slot (a limit of 1, or one just
        lowered), so a session must yield for the requests to move at all."""
        return self.requests_waiting > 0 and len(self._running) - len(self._sessions) == 0

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        """Return once `condition` (about this quota's state) holds; checked on every change."""
        while not condition():
            await self._changed.wait()

    async def changed(self, within: float | None = None) -> None:
        """Return at the next change of this quota's state, or after `within` seconds."""
        with suppress(TimeoutError):
            async with asyncio.timeout(within):
                await self._changed.wait()

    @asynccontextmanager
    async def slot(self, kind: str, target: str) -> AsyncIterator[Connection]:
        """Hold a slot for one short request, e.g. ``slot("status", "ns/step")``."""
        connection = await self.acquire(kind, target)
        try:
            yield connection
        finally:
            self.release(connection)

    async def acquire(self, kind: str, target: str) -> Connection:
        """Take a slot for a short request (waiting in line if none is free); pair with
        ``release()``."""
        if not self._requests and len(self._running) < self._limit:
            return self._grant(kind, target, waited=0.0, session=False)
        return await self._wait(kind, target, self._requests, session=False)

    async def acquire_session(self, target: str, *, resuming: bool = False) -> Connection:
        """Take one of the ``session_limit`` slots for an exec session (FIFO among sessions,
        after waiting requests); pair with ``release()``. `resuming`: a build that gave its
        slot up mid-step to collect the result later goes ahead of builds not yet started, so
        that detaching never costs a started build its place in line."""
        if not self._session_queue and not self._requests and self._session_room():
            return self._grant(SESSION, target, waited=0.0, session=True)
        return await self._wait(SESSION, target, self._session_queue, session=True, front=resuming)

    def _session_room(self) -> bool:
        return len(self._running) < self._limit and len(self._sessions) < self.session_limit

    async def _wait(
        self,
        kind: str,
        target: str,
        queue: collections.deque[_Ticket],
        *,
        session: bool,
        front: bool = False,
    ) -> Connection:
        loop = asyncio.get_running_loop()
        ticket = _Ticket(kind, target, self._clock(), loop.time(), loop.create_future(), session)
        if front:
            # Behind other resuming builds already at the front, ahead of new ones.
            index = sum(1 for t in queue if t.front and not t.future.done())
            ticket.front = True
            queue.insert(index, ticket)
        else:
            queue.append(ticket)
        self._admit()  # grants at once if a slot is free after all
        timeout = self._queue_timeout
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.shield(ticket.future)
        except TimeoutError:
            queued = self.queued_count
            self._abandon(ticket, queue)
            self._metrics.api_quota_timeouts.labels(pool=self.pool).inc()
            raise QuotaTimeout(
                self._timeout_message(kind, target, timeout, queued, session=session),
                pool=self.pool,
                limit=self._limit,
                running=len(self._running),
                queued=queued,
            ) from None
        except asyncio.CancelledError:
            self._abandon(ticket, queue)
            raise

    def release(self, connection: Connection) -> None:
        """Give a slot back; releasing twice is harmless."""
        if connection not in self._running:
            return
        del self._running[connection]
        self._sessions.discard(connection)
        self._admit()

    def _grant(self, kind: str, target: str, *, waited: float, session: bool) -> Connection:
        connection = Connection(kind, target, self._clock())
        self._running[connection] = None
        if session:
            self._sessions.add(connection)
        self._metrics.api_connections.labels(pool=self.pool, kind=kind).inc()
        self._metrics.api_quota_wait_seconds.labels(pool=self.pool).observe(waited)
        self._publish()
        return connection

    def _admit(self) -> None:
        """Hand free slots on: waiting requests first (they are short and keep builds' status
        moving), then waiting sessions while sessions are below their share."""
        now = asyncio.get_running_loop().time() if self._requests or self._session_queue else 0.0
        while len(self._running) < self._limit:
            if self._requests:
                ticket = self._requests.popleft()
            elif self._session_queue and len(self._sessions) < self.session_limit:
                ticket = self._session_queue.popleft()
            else:
                break
            if ticket.future.done():  # cancelled, not yet cleaned up
                continue
            connection = self._grant(
                ticket.kind,
                ticket.target,
                waited=now - ticket.enqueued_at,
                session=ticket.session,
            )
            ticket.future.set_result(connection)
        self._state_changed()

    def _abandon(self, ticket: _Ticket, queue: collections.deque[_Ticket]) -> None:
        if ticket.future.done() and not ticket.future.cancelled():
            # Granted in the same instant the waiter gave up: hand the slot on.
            self.release(ticket.future.result())
            return
        ticket.future.cancel()
        with suppress(ValueError):
            queue.remove(ticket)
        self._state_changed()

    def _state_changed(self) -> None:
        # Wake everyone in wait_until(); each checks its own condition again.
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        self._publish()

    def _publish(self) -> None:
        self._metrics.api_connections_running.labels(pool=self.pool).set(len(self._running))
        self._metrics.api_connections_queued.labels(pool=self.pool).set(self.queued_count)

    def _timeout_message(
        self, kind: str, target: str, timeout: float | None, queued: int, *, session: bool
    ) -> str:
        share = (
            f"; exec sessions may hold {self.session_limit} of them and "
            f"{len(self._sessions)} are open, {self.sessions_waiting} builds wait for one"
            if session
            else ""
        )
        return (
            f"Timed out after {timeout:g} s waiting for a Kubernetes API connection slot of "
            f"pool {self.pool} ({kind} {target}): limit {self._limit}, "
            f"{len(self._running)} running, {queued} waiting including this one{share}. "
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
