"""Kubernetes Events (core/v1) about our objects: best-effort and never in the caller's way.

An Event is a report for humans (`kubectl describe`, `kubectl get events`), not state the
operator depends on. Recording therefore never blocks the caller and never raises: each
Event is posted by a background task, through the pool's API quota when one is given
(every API connection made for a pool counts against its quota), and a failure is only
logged. When the API server is slow the backlog is bounded and newer Events are dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from kubernetes_asyncio.client import ApiClient, CoreV1Api

from agentpool.kube.quota import ApiQuota

__all__ = ["NORMAL", "WARNING", "EventRecorder", "ObjectRef"]

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


def event_body(
    ref: ObjectRef, type_: str, reason: str, message: str, *, component: str, now: datetime
) -> dict[str, Any]:
    """The core/v1 Event for one occurrence."""
    stamp = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 1] + "…"
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
        "message": message,
        "type": type_,
        "source": {"component": component},
        "reportingComponent": component,
        "reportingInstance": component,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


class EventRecorder:
    """Posts Events in the background; `record` returns at once."""

    def __init__(self, api: ApiClient, *, component: str = "agentpool-operator") -> None:
        self._core = CoreV1Api(api)
        self._component = component
        self._tasks: set[asyncio.Task[None]] = set()
        self._parallel = asyncio.Semaphore(MAX_PARALLEL)
        self.posted = 0
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
        """Post an Event about `ref` eventually; never blocks, never raises."""
        if len(self._tasks) >= MAX_BACKLOG:
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
        body = event_body(
            ref, type_, reason, message, component=self._component, now=datetime.now(UTC)
        )
        task = asyncio.get_running_loop().create_task(self._post(body, quota, ref))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post(self, body: dict[str, Any], quota: ApiQuota | None, ref: ObjectRef) -> None:
        # The generated client sends a plain dict body as is; its stub wants a model.
        create: Any = self._core.create_namespaced_event
        try:
            async with self._parallel:
                if quota is None:
                    await create(ref.namespace, body)
                else:
                    async with quota.slot("create", f"events/{ref.namespace}/{ref.name}"):
                        await create(ref.namespace, body)
            self.posted += 1
        except asyncio.CancelledError:
            raise
        except Exception as error:  # best effort: an Event must never break the operator
            self.failed += 1
            _log.info("could not post event %s about %s: %s", body["reason"], ref.name, error)

    async def flush(self, within: float = 5.0) -> None:
        """Wait (bounded) until the Events recorded so far are posted or failed."""
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
