"""The BuildStep status writer (`StepStatusWriter`): coalesced merge-patches on `/status`, one
request per step.

Sessions never write status themselves: a session holding the pool's only quota slot would
deadlock waiting for a second one. They hand fields to this writer, which runs its own task per
step. Updates to a step that is not yet on the wire merge into one patch (a quick step's
Running and Succeeded go out as one request); each patch is one request for one object and
takes a slot of the pool's quota (`kind="status"`).

A status write is never dropped because the quota is saturated or the API server errs: it is
retried with the shared back-off (`kube.backoff`: exponential with jitter and a cap, the
server's Retry-After on 429/503 as a floor), merged with whatever arrived meanwhile, until it
succeeds or the object is gone (404). The final phase is therefore written eventually, however
long the pool's connections stay busy. Only a 422 (the server refuses the content) gives up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException

from agentpool.kube.backoff import Backoff, BackoffPolicy, is_throttled, retry_after_seconds
from agentpool.kube.quota import ApiQuota, QuotaTimeout
from agentpool.steps.waits import first_done

__all__ = ["Patcher", "QuotaLookup", "StepStatusWriter"]

log = logging.getLogger(__name__)

# (namespace, name, status fields) -> one merge-patch of the status subresource.
Patcher = Callable[[str, str, dict[str, Any]], Awaitable[object]]
QuotaLookup = Callable[[str], ApiQuota | None]

BACKOFF_FIRST = 0.05
BACKOFF_MAX = 5.0


@dataclass
class _Pending:
    pool: str
    fields: dict[str, Any] = field(default_factory=dict)
    due: float = 0.0
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    writes: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)  # written, given up or dropped
    starved: QuotaTimeout | None = None  # the last attempt got no quota slot in time
    attempted: asyncio.Event = field(default_factory=asyncio.Event)
    retry_after: float | None = None  # the server's Retry-After on the last failed attempt


class StepStatusWriter:
    """Writes each step's status fields, coalescing updates that have not been sent yet."""

    def __init__(
        self,
        patch: Patcher,
        quota_for: QuotaLookup,
        *,
        backoff_first: float = BACKOFF_FIRST,
        backoff_max: float = BACKOFF_MAX,
    ) -> None:
        self._patch = patch
        self._quota_for = quota_for
        self._policy = BackoffPolicy(base=backoff_first, cap=backoff_max)
        self._pending: dict[tuple[str, str], _Pending] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self.requests = 0  # patches sent (successful or not), for tests and the benchmark

    def update(
        self,
        namespace: str,
        name: str,
        pool: str,
        fields: Mapping[str, Any],
        *,
        delay: float = 0.0,
    ) -> None:
        """Write `fields` within `delay` seconds; later updates to the same keys win.

        A delay lets a short-lived state (Queued, Running of a quick step) be superseded
        before it costs a request; an update with a shorter delay brings the write forward.
        """
        key = (namespace, name)
        loop = asyncio.get_running_loop()
        pending = self._pending.get(key)
        due = loop.time() + max(delay, 0.0)
        if pending is None:
            pending = _Pending(pool=pool, due=due)
            self._pending[key] = pending
        else:
            pending.due = min(pending.due, due) if pending.fields else due
        pending.pool = pool
        pending.fields.update(fields)
        pending.wake.set()
        if pending.task is None or pending.task.done():
            self._idle.clear()
            pending.task = asyncio.create_task(self._run(key, pending), name=f"status-{name}")

    def forget(self, namespace: str, name: str) -> None:
        """The object is gone: drop whatever was still to be written."""
        pending = self._pending.pop((namespace, name), None)
        if pending is not None:
            pending.done.set()
            if pending.task is not None:
                pending.task.cancel()
        self._check_idle()

    async def written(self, namespace: str, name: str) -> None:
        """Return once the step's updates so far are written (or given up: 404, 422).

        Raises QuotaTimeout when an attempt made after this call got no slot of the pool's
        quota within its queue timeout; the write itself goes on in the background, as every
        write does.
        """
        pending = self._pending.get((namespace, name))
        if pending is not None:
            pending.starved = None  # an earlier attempt's starvation is not this caller's
        while pending is not None and not pending.done.is_set():
            if pending.starved is not None:
                raise pending.starved
            pending.attempted.clear()
            await first_done([pending.done.wait(), pending.attempted.wait()])

    def settled(self, namespace: str, name: str) -> bool:
        """Every update made for the step is written (or given up): nothing is in flight."""
        return (namespace, name) not in self._pending

    def pending(self, namespace: str, name: str) -> dict[str, Any]:
        """Fields not yet written for a step (a copy)."""
        current = self._pending.get((namespace, name))
        return dict(current.fields) if current is not None else {}

    async def flush(self) -> None:
        """Return once every update made so far has been written or abandoned."""
        await self._idle.wait()

    async def close(self) -> None:
        """Stop writing; unwritten updates are lost (used at shutdown after `flush`)."""
        tasks = [p.task for p in self._pending.values() if p.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for pending in self._pending.values():
            pending.done.set()
        self._pending.clear()
        self._idle.set()

    async def _run(self, key: tuple[str, str], pending: _Pending) -> None:
        loop = asyncio.get_running_loop()
        backoff = Backoff(self._policy, clock=loop.time)
        try:
            while pending.fields:
                while (wait := pending.due - loop.time()) > 0:
                    pending.wake.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(wait):
                            await pending.wake.wait()
                fields, pending.fields = pending.fields, {}
                pending.retry_after = None
                if await self._write(key, pending.pool, fields, retrying=backoff.failures):
                    if backoff.failing:
                        log.info(
                            "status of %s/%s written after %d failure(s)",
                            *key,
                            backoff.failures,
                        )
                    backoff.succeeded()
                    pending.writes += 1
                    continue
                if self._pending.get(key) is not pending:
                    return  # forgotten (deleted) or given up
                # Keep what failed unless newer values replaced it, and try again later.
                pending.fields = {**fields, **pending.fields}
                pending.due = loop.time() + backoff.failed(retry_after=pending.retry_after)
        finally:
            if self._pending.get(key) is pending and not pending.fields:
                del self._pending[key]
            if self._pending.get(key) is not pending:
                pending.done.set()
            self._check_idle()

    async def _write(
        self, key: tuple[str, str], pool: str, fields: dict[str, Any], *, retrying: int = 0
    ) -> bool:
        """One attempt; `retrying`: failures before it (only the first failure is a warning,
        so an API server failing every write costs one line per step, not one per attempt)."""
        namespace, name = key
        warn = log.debug if retrying else log.warning
        quota = self._quota_for(pool)
        try:
            if quota is None:
                self.requests += 1
                await self._patch(namespace, name, fields)
            else:
                async with quota.slot("status", f"{namespace}/{name}"):
                    self.requests += 1
                    await self._patch(namespace, name, fields)
        except QuotaTimeout as error:
            warn("status of %s/%s waits for the quota: %s", namespace, name, error)
            self._attempted(key, error)
            return False
        except ApiException as error:
            if error.status == 404:
                self._pending.pop(key, None)
                return False
            if error.status == 422:
                log.error("status of %s/%s refused: %s", namespace, name, error.body)
                self._pending.pop(key, None)
                return False
            if is_throttled(error.status):
                retry_after = retry_after_seconds(error.headers)
                pending = self._pending.get(key)
                if pending is not None:
                    pending.retry_after = retry_after
            warn("status of %s/%s: HTTP %s, retrying", namespace, name, error.status)
            return False
        except Exception as error:  # a write that must not be lost: keep trying
            warn("status of %s/%s: %r, retrying", namespace, name, error)
            return False
        self._attempted(key, None)
        return True

    def _attempted(self, key: tuple[str, str], starved: QuotaTimeout | None) -> None:
        pending = self._pending.get(key)
        if pending is not None:
            pending.starved = starved
            pending.attempted.set()

    def _check_idle(self) -> None:
        # Called from a writer task's `finally`: that task is ending, do not wait for it.
        current = asyncio.current_task()
        busy = any(
            p.fields or (p.task is not None and not p.task.done() and p.task is not current)
            for p in self._pending.values()
        )
        if busy:
            self._idle.clear()
        else:
            self._idle.set()
