"""Watch plumbing: the bounded event history and per-client subscriptions."""

from __future__ import annotations

import asyncio
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from agentpool_sandbox.selectors import FieldRequirement, Requirement, fields_match, labels_match


@dataclass
class Event:
    """One change to one object; `previous` lets selector watches see objects leave the set."""

    rv: int
    type: str
    obj: dict[str, Any]
    previous: dict[str, Any] | None = None
    _encoded: dict[str, bytes] = field(default_factory=dict, repr=False)

    def encoded(self, kind: str) -> bytes:
        """The wire form of this event as `kind`, serialised once however many watchers."""
        cached = self._encoded.get(kind)
        if cached is None:
            cached = json.dumps({"type": kind, "object": self.obj}).encode() + b"\n"
            self._encoded[kind] = cached
        return cached


class History:
    """The last `size` events of one resource; resuming older than that is 410 Gone."""

    def __init__(self, size: int, floor: int) -> None:
        self.events: deque[Event] = deque(maxlen=size)
        # Events with rv <= floor are no longer known.
        self.floor = floor

    def append(self, event: Event) -> None:
        if self.events.maxlen is not None and len(self.events) == self.events.maxlen:
            self.floor = self.events[0].rv
        self.events.append(event)

    def since(self, rv: int) -> list[Event]:
        if not self.events or self.events[-1].rv <= rv:
            return []
        return [e for e in self.events if e.rv > rv]


class Subscription:
    """A watcher's filter and queue. Events are pushed synchronously by the store."""

    def __init__(
        self,
        namespace: str | None,
        labels: list[Requirement],
        fields: list[FieldRequirement],
    ) -> None:
        self.namespace = namespace
        self.labels = labels
        self.fields = fields
        self.queue: asyncio.Queue[tuple[str, Event]] = asyncio.Queue()
        self.closed = False

    def _matches(self, obj: dict[str, Any] | None) -> bool:
        if obj is None:
            return False
        if self.namespace and obj.get("metadata", {}).get("namespace") != self.namespace:
            return False
        return labels_match(self.labels, obj) and fields_match(self.fields, obj)

    def translate(self, event: Event) -> str | None:
        """The event type this watcher sees: objects entering or leaving the selected set
        become ADDED/DELETED, as with the real watch cache."""
        now = self._matches(event.obj)
        if event.type != "MODIFIED":
            return event.type if now else None
        before = self._matches(event.previous)
        if now and before:
            return "MODIFIED"
        if now:
            return "ADDED"
        if before:
            return "DELETED"
        return None

    def offer(self, event: Event) -> None:
        kind = self.translate(event)
        if kind is not None and not self.closed:
            self.queue.put_nowait((kind, event))
