"""Server-side printing: `meta.k8s.io/v1` Tables as `kubectl get` asks for them."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from agentpool_sandbox.resources import ResourceType

Obj = dict[str, Any]

_SEGMENT = re.compile(
    r"""\.(?P<field>[A-Za-z0-9_\-]+)
      | \[(?P<index>-?\d+)\]
      | \[\?\(@\.(?P<key>[A-Za-z0-9_.\-]+)\s*==\s*(?P<q>["'])(?P<value>.*?)(?P=q)\)\]
      | \[\*\]""",
    re.VERBOSE,
)


def jsonpath(obj: Any, path: str) -> list[Any]:
    """Evaluate the JSONPath subset printer columns use: `.a.b`, `[0]`, `[*]`, `[?(@.k=="v")]`."""
    path = path.strip()
    if path.startswith("{") and path.endswith("}"):
        path = path[1:-1]
    path = path.removeprefix("$")
    values = [obj]
    position = 0
    while position < len(path):
        match = _SEGMENT.match(path, position)
        if match is None:
            return []
        position = match.end()
        nxt: list[Any] = []
        for value in values:
            if match.group("field") is not None:
                if isinstance(value, dict) and match.group("field") in value:
                    nxt.append(value[match.group("field")])
            elif match.group("index") is not None:
                index = int(match.group("index"))
                if isinstance(value, list) and -len(value) <= index < len(value):
                    nxt.append(value[index])
            elif match.group("key") is not None:
                if isinstance(value, list):
                    for item in value:
                        found = jsonpath(item, "." + match.group("key"))
                        if found and str(found[0]) == match.group("value"):
                            nxt.append(item)
            elif isinstance(value, list):
                nxt.extend(value)
        values = nxt
    return values


def _two_units(major: int, major_unit: str, minor: int, minor_unit: str) -> str:
    """`3m5s`, or `3m` when the minor part is zero."""
    return f"{major}{major_unit}{minor}{minor_unit}" if minor else f"{major}{major_unit}"


def human_duration(seconds: float) -> str:
    """Kubernetes' `duration.HumanDuration`, as the AGE column shows."""
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return _two_units(minutes, "m", s % 60, "s")
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        return _two_units(hours, "h", minutes % 60, "m")
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return _two_units(hours // 24, "d", hours % 24, "h")
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    years = hours // (24 * 365)
    if years < 8:
        return _two_units(years, "y", (hours // 24) % 365, "d")
    return f"{years}y"


def age(timestamp: Any, now: datetime | None = None) -> str:
    """Time since an RFC 3339 timestamp (seconds or, like `eventTime`, microseconds)."""
    if not isinstance(timestamp, str) or not timestamp:
        return "<unknown>"
    try:
        then = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return "<invalid>"
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    return human_duration(((now or datetime.now(UTC)) - then).total_seconds())


def _column(name: str, kind: str = "string", description: str = "", priority: int = 0) -> Obj:
    return {
        "name": name,
        "type": kind,
        "format": "name" if name == "Name" else "",
        "description": description,
        "priority": priority,
    }


def _cell(kind: str, values: list[Any]) -> Any:
    if not values:
        return None
    value = values[0]
    if kind == "date":
        return age(value)
    if kind == "integer":
        return value if isinstance(value, int) else None
    if kind == "number":
        return value if isinstance(value, (int, float)) else None
    if kind == "boolean":
        return value if isinstance(value, bool) else None
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value) if not isinstance(value, str) else value


def _pod_cells(pod: Obj) -> list[Any]:
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    statuses = status.get("containerStatuses") or []
    ready = sum(1 for s in statuses if s.get("ready"))
    restarts = sum(int(s.get("restartCount", 0)) for s in statuses)
    reason = status.get("reason") or status.get("phase") or "Pending"
    for s in statuses:
        state = s.get("state") or {}
        waiting = (state.get("waiting") or {}).get("reason")
        terminated = (state.get("terminated") or {}).get("reason")
        if waiting:
            reason = waiting
        elif terminated:
            reason = terminated
    if pod.get("metadata", {}).get("deletionTimestamp"):
        reason = "Terminating"
    # As kube-apiserver prints it: "3 (12s ago)", the age of the latest restart.
    last_restarts = [
        str(((s.get("lastState") or {}).get("terminated") or {}).get("finishedAt") or "")
        for s in statuses
        if s.get("restartCount")
    ]
    last_restart = max(last_restarts, default="")
    restarts_cell = f"{restarts} ({age(last_restart)} ago)" if last_restart else str(restarts)
    return [
        pod["metadata"]["name"],
        f"{ready}/{len(spec.get('containers') or [])}",
        reason,
        restarts_cell,
        age(pod["metadata"].get("creationTimestamp")),
    ]


def _event_source(event: Obj) -> str:
    source = event.get("source") or {}
    component = source.get("component") or event.get("reportingComponent") or ""
    instance = source.get("host") or event.get("reportingInstance") or ""
    if not component:
        return "<unknown>"
    return f"{component}, {instance}" if instance else component


def event_cells(event: Obj, now: datetime | None = None) -> list[Any]:
    """The real server's event row: ages fall back from lastTimestamp to eventTime to series."""
    first = age(event.get("firstTimestamp") or event.get("eventTime"), now)
    last = age(event["lastTimestamp"], now) if event.get("lastTimestamp") else first
    count = event.get("count") or 1
    if series := event.get("series"):
        last = age(series.get("lastObservedTime"), now)
        count = series.get("count") or count
    involved = event.get("involvedObject") or {}
    kind = str(involved.get("kind") or "").lower()
    target = f"{kind}/{involved['name']}" if involved.get("name") else kind
    return [
        last,
        event.get("type", ""),
        event.get("reason", ""),
        target,
        involved.get("fieldPath", ""),
        _event_source(event),
        str(event.get("message") or "").strip(),
        first,
        int(count),
        event["metadata"]["name"],
    ]


# The server always sends the wide columns; kubectl shows priority 1 ones only with `-o wide`.
_EVENT_COLUMNS = [
    _column("Last Seen", description="The time at which the most recent occurrence was recorded."),
    _column("Type", description="Type of this event (Normal, Warning)."),
    _column("Reason", description="Why the action was taken, in CamelCase."),
    _column("Object", description="The object that this event is about."),
    _column("Subobject", description="The part of the object the event is about.", priority=1),
    _column("Source", description="The component reporting this event.", priority=1),
    _column("Message", description="A human-readable description of the status."),
    _column("First Seen", description="The time the event was first recorded.", priority=1),
    _column("Count", description="The number of times this event has occurred.", priority=1),
    {**_column("Name", priority=1), "description": "Name of the event."},
]


def _definition(rtype: ResourceType) -> tuple[list[Obj], Any]:
    """Column definitions and a cell function per resource type."""
    name_col = _column("Name", description="Name must be unique within a namespace.")
    age_col = _column("Age", description="CreationTimestamp is a timestamp.")
    if rtype.custom and rtype.printer_columns:
        columns = [name_col] + [
            _column(
                c["name"], c.get("type", "string"), c.get("description", ""), c.get("priority", 0)
            )
            for c in rtype.printer_columns
        ]
        printers = rtype.printer_columns

        def custom_cells(obj: Obj) -> list[Any]:
            return [obj["metadata"]["name"]] + [
                _cell(c.get("type", "string"), jsonpath(obj, c.get("jsonPath", "")))
                for c in printers
            ]

        return columns, custom_cells
    if rtype.key == "pods":
        return [
            name_col,
            _column("Ready", description="The aggregate readiness state of this pod."),
            _column("Status", description="The aggregate status of the containers in this pod."),
            _column("Restarts", description="The number of times the containers restarted."),
            age_col,
        ], _pod_cells
    if rtype.key == "events":
        return _EVENT_COLUMNS, event_cells
    if rtype.key == "namespaces":
        return [name_col, _column("Status"), age_col], lambda o: [
            o["metadata"]["name"],
            (o.get("status") or {}).get("phase", ""),
            age(o["metadata"].get("creationTimestamp")),
        ]
    if rtype.key == "customresourcedefinitions.apiextensions.k8s.io":
        return [name_col, _column("Created At", "date")], lambda o: [
            o["metadata"]["name"],
            o["metadata"].get("creationTimestamp"),
        ]
    return [name_col, age_col], lambda o: [
        o["metadata"]["name"],
        age(o["metadata"].get("creationTimestamp")),
    ]


def _row_object(obj: Obj, include: str) -> Obj | None:
    if include == "None":
        return None
    if include == "Object":
        return obj
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata", {}),
    }


def table(
    rtype: ResourceType, objects: list[Obj], resource_version: str, include: str = "Metadata"
) -> Obj:
    columns, cells = _definition(rtype)
    rows = []
    for obj in objects:
        row: Obj = {"cells": cells(obj)}
        embedded = _row_object(obj, include)
        if embedded is not None:
            row["object"] = embedded
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": columns,
        "rows": rows,
    }
