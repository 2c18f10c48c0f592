"""Kubernetes Events (core/v1) about our objects: best-effort and never in the caller's way.

An Event is a report for humans (`kubectl describe`, `kubectl get events`), not state the
operator depends on. Recording therefore never blocks the caller and never raises: each
Event is posted by a background task, through the pool's API quota when one is given
(every API connection made for a pool counts against its quota), and a failure is only
logged. When the API server is slow the backlog is bounded and newer Events are dropped.

Like client-go's EventCorrelator, repeats are aggregated: the same Event (same object,
type, reason and message) recorded again within a window updates the existing object's
`count`, `lastTimestamp` and `message` with one merge patch instead of creating another
object, and repeats arriving while a write is in flight are folded into one follow-up
patch. With `max_similar` set (client-go uses `MAX_SIMILAR`), beyond that many distinct
messages of one object, type and reason in a window (a pool's "created agent pod X" for
each X), the rest go to one "(combined from similar events)" Event showing the latest
message. The bookkeeping is the pure `EventCorrelator`;
`EventRecorder` only does the I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, Literal

from kubernetes_asyncio.client import ApiClient, CoreV1Api
from kubernetes_asyncio.client.exceptions import ApiException

from agentpool.kube.quota import ApiQuota
from agentpool.timestamps import format_time, now

__all__ = [
    "NORMAL",
    "WARNING",
    "EventCorrelator",
    "EventKey",
    "EventRecorder",
    "ObjectRef",
    "Write",
]

NORMAL: Final = "Normal"
WARNING: Final = "Warning"

# The API server rejects longer messages; Events are summaries anyway.
MAX_MESSAGE: Final = 1024
# Beyond this many Events waiting to be posted, new ones are dropped (and logged).
MAX_BACKLOG: Final = 512
# While the backlog stays full, one warning per this many dropped Events.
DROPS_PER_WARNING: Final = 100
# Few parallel posts: Events must not crowd out the pool's real work.
MAX_PARALLEL: Final = 4
# A repeat within this long of the previous occurrence updates the same Event (client-go: 10 min).
AGGREGATION_WINDOW: Final = timedelta(minutes=10)
# Distinct Events remembered for aggregation; the least recently seen are forgotten first.
MAX_SERIES: Final = 4096
# Distinct messages of one object, type and reason per window before they are combined, as
# client-go does; opt-in (`max_similar`) while readers still count per-pod Events.
MAX_SIMILAR: Final = 10
COMBINED: Final = "(combined from similar events)"

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ObjectRef:
    """The object an Event is about (its involvedObject)."""

    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str = ""

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> ObjectRef:
        meta = body.get("metadata") or {}
        return cls(
            api_version=str(body.get("apiVersion", "")),
            kind=str(body.get("kind", "")),
            namespace=str(meta.get("namespace", "")),
            name=str(meta.get("name", "")),
            uid=str(meta.get("uid", "")),
        )

    def to_body(self) -> dict[str, str]:
        body = {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
        }
        if self.uid:
            body["uid"] = self.uid
        return body


def _clip(message: str) -> str:
    if len(message) > MAX_MESSAGE:
        return message[: MAX_MESSAGE - 1] + "…"
    return message


@dataclass(frozen=True)
class EventKey:
    """What makes two occurrences the same Event."""

    ref: ObjectRef
    type_: str
    reason: str
    message: str


@dataclass(frozen=True)
class Write:
    """One API write for a series: create its Event, or patch the existing one."""

    verb: Literal["create", "patch"]
    key: EventKey  # the Event's identity (a combined Event's carries COMBINED)
    message: str  # the latest message
    count: int
    first: datetime
    last: datetime
    name: str = ""  # the Event to patch
    series: int = 0  # which window of the key it belongs to


@dataclass
class _Series:
    number: int
    message: str
    first: datetime
    last: datetime
    count: int
    name: str = ""  # the Event object, once created
    written: int = 0  # the count the API server has
    in_flight: bool = False


class EventCorrelator:
    """Which write, if any, each occurrence needs; pure bookkeeping, no I/O.

    `observe` an occurrence and start the write it returns (None: a write for that Event is
    in flight and will be followed up); report each write's outcome to `done`, which may
    return the follow-up for occurrences that arrived meanwhile.
    """

    def __init__(
        self,
        window: timedelta = AGGREGATION_WINDOW,
        capacity: int = MAX_SERIES,
        *,
        max_similar: int | None = None,
    ) -> None:
        self._window = window
        self._capacity = capacity
        self._max_similar = max_similar
        self._series: OrderedDict[EventKey, _Series] = OrderedDict()
        self._started = 0
        # (ref, type, reason) -> distinct messages seen in the window, and when last seen.
        self._similar: OrderedDict[tuple[ObjectRef, str, str], tuple[set[str], datetime]] = (
            OrderedDict()
        )

    def __len__(self) -> int:
        return len(self._series)

    def observe(self, key: EventKey, now: datetime) -> Write | None:
        key, message = self._aggregate(key, now)
        series = self._series.get(key)
        if series is None or now - series.last > self._window:
            # A write of an older window may still be out: numbering keeps its outcome apart.
            self._started += 1
            series = _Series(self._started, message, first=now, last=now, count=1)
            self._series[key] = series
        else:
            series.count += 1
            series.message = message
            series.last = max(series.last, now)
        self._series.move_to_end(key)
        while len(self._series) > self._capacity:
            self._series.popitem(last=False)
        if series.in_flight:
            return None
        return self._start(key, series)

    def _aggregate(self, key: EventKey, now: datetime) -> tuple[EventKey, str]:
        """The key of the Event this occurrence counts in, and the message that Event shows."""
        if self._max_similar is None:
            return key, key.message
        similar = (key.ref, key.type_, key.reason)
        messages, last = self._similar.get(similar, (set[str](), now))
        if now - last > self._window:
            messages = set()
        messages.add(key.message)
        self._similar[similar] = (messages, now)
        self._similar.move_to_end(similar)
        while len(self._similar) > self._capacity:
            self._similar.popitem(last=False)
        if len(messages) <= self._max_similar:
            return key, key.message
        return EventKey(key.ref, key.type_, key.reason, COMBINED), f"{COMBINED}: {key.message}"

    def done(self, write: Write, *, name: str = "", missing: bool = False) -> Write | None:
        """The outcome of `write`: `name` of the Event on success, `missing` if it expired.

        Neither (a failure) leaves the occurrences to the next write of the series.
        """
        key = write.key
        series = self._series.get(key)
        if series is None or series.number != write.series or not series.in_flight:
            return None  # forgotten (evicted, or superseded by a new window) meanwhile
        series.in_flight = False
        if name:
            series.name = name
            series.written = write.count
        elif missing:
            series.name, series.written = "", 0
            return self._start(key, series)
        else:
            return None
        return self._start(key, series) if series.count > series.written else None

    def _start(self, key: EventKey, series: _Series) -> Write:
        series.in_flight = True
        verb: Literal["create", "patch"] = "patch" if series.name else "create"
        return Write(
            verb,
            key,
            series.message,
            series.count,
            series.first,
            series.last,
            name=series.name,
            series=series.number,
        )


def event_body(
    ref: ObjectRef,
    type_: str,
    reason: str,
    message: str,
    *,
    component: str,
    now: datetime,
    count: int = 1,
    first: datetime | None = None,
) -> dict[str, Any]:
    """The core/v1 Event for `count` occurrences, the latest `now`."""
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            # Like client-go's recorder: object name plus a unique suffix.
            "name": f"{ref.name}.{secrets.token_hex(8)}",
            "namespace": ref.namespace,
        },
        "involvedObject": ref.to_body(),
        "reason": reason,
        "message": _clip(message),
        "type": type_,
        "source": {"component": component},
        "reportingComponent": component,
        "reportingInstance": component,
        "firstTimestamp": format_time(first or now),
        "lastTimestamp": format_time(now),
        "count": count,
    }


def repeat_patch(write: Write) -> dict[str, Any]:
    """The merge patch that brings an existing Event up to `write`."""
    return {
        "count": write.count,
        "lastTimestamp": format_time(write.last),
        "message": _clip(write.message),
    }


class EventRecorder:
    """Writes Events in the background; `record` returns at once."""

    def __init__(
        self,
        api: ApiClient,
        *,
        component: str = "agentpool-operator",
        correlator: EventCorrelator | None = None,
    ) -> None:
        self._core = CoreV1Api(api)
        self._component = component
        self._correlator = correlator if correlator is not None else EventCorrelator()
        self._tasks: set[asyncio.Task[None]] = set()
        self._parallel = asyncio.Semaphore(MAX_PARALLEL)
        self.posted = 0
        self.patched = 0
        self.coalesced = 0
        self.dropped = 0
        self.failed = 0

    def record(
        self,
        ref: ObjectRef,
        type_: str,
        reason: str,
        message: str,
        *,
        quota: ApiQuota | None = None,
    ) -> None:
        """Write an Event about `ref` eventually; never blocks, never raises."""
        key = EventKey(ref, type_, reason, message)
        write = self._correlator.observe(key, now())
        if write is None:
            self.coalesced += 1
            return
        if len(self._tasks) >= MAX_BACKLOG:
            # The occurrence stays counted: the series' next write reports it.
            self._correlator.done(write)
            self.dropped += 1
            # One line per burst of drops, not one per Event: a churning pool drops hundreds.
            if self.dropped % DROPS_PER_WARNING == 1:
                _log.warning(
                    "event backlog full (%d waiting): dropped %d Event(s) so far, latest %s %s",
                    len(self._tasks),
                    self.dropped,
                    ref.name,
                    reason,
                )
            return
        task = asyncio.get_running_loop().create_task(self._write(write, quota))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write(self, write: Write, quota: ApiQuota | None) -> None:
        """Carry out `write`, then any follow-up the correlator asks for."""
        next_write: Write | None = write
        while next_write is not None:
            write = next_write
            key = write.key
            name, missing = "", False
            try:
                async with self._parallel:
                    if quota is None:
                        name = await self._send(write)
                    else:
                        target = f"events/{key.ref.namespace}/{key.ref.name}"
                        async with quota.slot(write.verb, target):
                            name = await self._send(write)
            except asyncio.CancelledError:
                self._correlator.done(write)
                raise
            except ApiException as error:
                missing = write.verb == "patch" and error.status == 404
                if not missing:
                    self._failed(key, write, error)
            except Exception as error:  # best effort: an Event must never break the operator
                self._failed(key, write, error)
            next_write = self._correlator.done(write, name=name, missing=missing)

    async def _send(self, write: Write) -> str:
        """One API call for `write`; the name of the Event it wrote."""
        key = write.key
        # The generated client sends a plain dict body as is; its stub wants a model.
        if write.verb == "patch":
            patch: Any = self._core.patch_namespaced_event
            await patch(
                write.name,
                key.ref.namespace,
                repeat_patch(write),
                _content_type="application/merge-patch+json",
            )
            self.patched += 1
            return write.name
        body = event_body(
            key.ref,
            key.type_,
            key.reason,
            write.message,
            component=self._component,
            now=write.last,
            count=write.count,
            first=write.first,
        )
        create: Any = self._core.create_namespaced_event
        await create(key.ref.namespace, body)
        self.posted += 1
        return str(body["metadata"]["name"])

    def _failed(self, key: EventKey, write: Write, error: Exception) -> None:
        self.failed += 1
        _log.info("could not %s event %s about %s: %s", write.verb, key.reason, key.ref.name, error)

    async def flush(self, within: float = 5.0) -> None:
        """Wait (bounded) until the Events recorded so far are written or failed."""
        pending = list(self._tasks)
        if pending:
            await asyncio.wait(pending, timeout=within)

    async def close(self) -> None:
        """Give pending Events a moment, then cancel the rest."""
        await self.flush(within=1.0)
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
