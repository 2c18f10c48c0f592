"""Retention: a finished BuildStep is deleted `ttlSecondsAfterFinished` after it finished.

As for Jobs: the step's own `spec.ttlSecondsAfterFinished`, else its pool's
`spec.steps.ttlSecondsAfterFinished`, else it is kept until someone deletes it. Deletions carry
the step's uid as a precondition (a step re-created under the same name is never deleted by
mistake), go through the pool's API quota like every request, and back off on errors. The
engine feeds every finished step in (`keep`) and every deletion (`forget`).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

from kubernetes_asyncio.client.exceptions import ApiException

from agentpool.kube.backoff import Backoff, BackoffPolicy, retry_after_seconds
from agentpool.kube.quota import ApiQuota

__all__ = ["Retention", "StepRef", "ttl_of"]

log = logging.getLogger(__name__)

# (namespace, name, uid, pool) of a BuildStep.
StepRef = tuple[str, str, str, str]
# (namespace, name, uid) -> delete the BuildStep if it still has that uid.
Deleter = Callable[[str, str, str], Awaitable[object]]
DELETE_BACKOFF = BackoffPolicy(base=1.0, cap=60.0)
# Steps kept for a pool whose default is not known yet (its spec not seen, or none set).
PARKED_MAX = 100_000


def ttl_of(step_ttl: int | None, pool_ttl: int | None) -> int | None:
    """The retention that applies: the step's own, else its pool's, else none."""
    return step_ttl if step_ttl is not None else pool_ttl


@dataclass(frozen=True)
class _Step:
    namespace: str
    name: str
    uid: str
    pool: str
    finished: float  # epoch seconds
    ttl: int | None  # the step's own


@dataclass(order=True)
class _Due:
    at: float
    uid: str = field(compare=False)


class Retention:
    """Deletes finished steps when their time-to-live has passed; see the module docstring."""

    def __init__(
        self,
        delete: Deleter,
        pool_ttl: Callable[[str], int | None],
        quota_for: Callable[[str], ApiQuota | None],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._delete = delete
        self._pool_ttl = pool_ttl
        self._quota_for = quota_for
        self._clock = clock
        self._steps: dict[str, _Step] = {}
        self._due: dict[str, float] = {}  # uid -> when; the heap may hold stale entries
        self._heap: list[_Due] = []
        self._wake = asyncio.Event()
        self._backoff = Backoff(DELETE_BACKOFF)
        self.deleted = 0  # for tests and the benchmark

    def keep(self, ref: StepRef, finished: datetime | None, ttl: int | None) -> None:
        """A step (namespace, name, uid, pool) is final since `finished` (None: now): schedule
        its deletion if a time-to-live applies (`ttl`: the step's own)."""
        namespace, name, uid, pool = ref
        moment = finished.timestamp() if finished is not None else self._clock()
        step = _Step(namespace, name, uid, pool, moment, ttl)
        if ttl is None and len(self._steps) >= PARKED_MAX and uid not in self._steps:
            return  # bounded memory: such a step waits for someone to delete it
        self._steps[uid] = step
        self._schedule(step)

    def forget(self, uid: str) -> None:
        """The step is gone (deleted by anyone)."""
        self._steps.pop(uid, None)
        self._due.pop(uid, None)

    def pool_changed(self, pool: str) -> None:
        """The pool's default may have changed: steps relying on it are scheduled again."""
        for step in self._steps.values():
            if step.pool == pool and step.ttl is None:
                self._schedule(step)

    def _schedule(self, step: _Step) -> None:
        ttl = ttl_of(step.ttl, self._pool_ttl(step.pool))
        if ttl is None:
            self._due.pop(step.uid, None)
            return
        at = step.finished + ttl
        if self._due.get(step.uid) == at:
            return
        self._due[step.uid] = at
        heapq.heappush(self._heap, _Due(at, step.uid))
        self._wake.set()

    async def run(self) -> None:
        """Delete steps as they fall due, until cancelled."""
        while True:
            self._wake.clear()
            wait: float | None = self._backoff.remaining()
            if not wait:
                wait = await self.delete_due()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    async def delete_due(self) -> float | None:
        """Delete what is due; returns the seconds until the next is (None: nothing left)."""
        while self._heap:
            head = self._heap[0]
            if self._due.get(head.uid) != head.at:
                heapq.heappop(self._heap)  # rescheduled or forgotten
                continue
            now = self._clock()
            if head.at > now:
                return head.at - now
            step = self._steps[head.uid]
            if not await self._delete_step(step):
                return self._backoff.remaining()
            heapq.heappop(self._heap)
            self.forget(step.uid)
        return None

    async def _delete_step(self, step: _Step) -> bool:
        """True when the step is gone (deleted now, or before); False: try again later."""
        quota = self._quota_for(step.pool)
        try:
            if quota is None:
                await self._delete(step.namespace, step.name, step.uid)
            else:
                target = f"buildsteps/{step.namespace}/{step.name}"
                async with quota.slot("delete", target):
                    await self._delete(step.namespace, step.name, step.uid)
        except ApiException as error:
            # 404: gone already; 409: the name now belongs to another step (uid precondition).
            if error.status not in (404, 409):
                return self._failed(step, f"HTTP {error.status}", error)
        except Exception as error:
            return self._failed(step, repr(error), None)
        self._backoff.succeeded()
        self.deleted += 1
        return True

    def _failed(self, step: _Step, what: str, error: ApiException | None) -> bool:
        retry_after = retry_after_seconds(error.headers) if error is not None else None
        delay = self._backoff.failed(what, retry_after=retry_after)
        if self._backoff.failures == 1:
            log.warning(
                "deleting finished step %s/%s (ttlSecondsAfterFinished) failed: %s; "
                "retrying in %.1f s",
                step.namespace,
                step.name,
                what,
                delay,
            )
        return False
