"""`agentpool status`: the operator's view of each pool's API connections, as tables.

The seed's operators pasted a Groovy script into a console to count running and queued API
calls per client. This reads the same facts from the operator's `/debug/connections` (limit,
each running connection with its age, each queued one with its wait, agents by state, steps
queued and running) and its `/metrics` (steps by final phase), both on the metrics port.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

__all__ = [
    "Snapshot",
    "Unreachable",
    "fetch",
    "print_snapshot",
    "render",
    "select",
    "steps_by_phase",
    "to_json",
]

FETCH_TIMEOUT = 5.0
STEPS_METRIC = "agentpool_steps"


class Unreachable(Exception):
    """The operator's metrics port did not answer as expected."""


@dataclass(frozen=True)
class Snapshot:
    """What `/debug/connections` said, plus final step phases per pool from `/metrics`."""

    time: str
    pools: list[dict[str, Any]]
    phases: dict[str, dict[str, int]] = field(default_factory=dict)


def steps_by_phase(metrics_text: str) -> dict[str, dict[str, int]]:
    """`agentpool_steps_total{pool,phase}` from a /metrics exposition, per pool."""
    phases: dict[str, dict[str, int]] = defaultdict(dict)
    for family in text_string_to_metric_families(metrics_text):
        if family.name != STEPS_METRIC:
            continue
        for sample in family.samples:
            if sample.name.endswith("_total"):
                pool, phase = sample.labels.get("pool", ""), sample.labels.get("phase", "")
                phases[pool][phase] = int(sample.value)
    return dict(phases)


def _get(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT) as response:
            body: bytes = response.read()
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise Unreachable(
            f"cannot read {url}: {reason}. Is the operator running, and is this its metrics "
            "port (--metrics-port, 9090 by default; in a cluster: kubectl port-forward)?"
        ) from None
    return body.decode("utf-8", "replace")


def fetch(url: str) -> Snapshot:
    """Read `/debug/connections` and `/metrics` from the operator at `url`."""
    base = url.rstrip("/")
    raw = _get(base + "/debug/connections")
    try:
        body = json.loads(raw)
        pools = list(body["pools"])
    except (ValueError, KeyError, TypeError):
        raise Unreachable(f"{base}/debug/connections did not answer an operator snapshot") from None
    return Snapshot(
        time=str(body.get("time", "")),
        pools=pools,
        phases=steps_by_phase(_get(base + "/metrics")),
    )


def select(snapshot: Snapshot, *, pool: str | None, namespace: str | None) -> Snapshot:
    """Only the pools asked for: POOL as `name` or `namespace/name`, and/or a namespace."""

    def wanted(key: str) -> bool:
        ns, _, name = key.partition("/")
        if namespace is not None and ns != namespace:
            return False
        if pool is None:
            return True
        return pool == key if "/" in pool else pool == name

    return replace(snapshot, pools=[p for p in snapshot.pools if wanted(str(p.get("pool")))])


def to_json(snapshot: Snapshot) -> str:
    pools = [
        {**p, "stepsByPhase": snapshot.phases.get(str(p.get("pool")), {})} for p in snapshot.pools
    ]
    return json.dumps({"time": snapshot.time, "pools": pools}, indent=2)


def _seconds(value: Any) -> str:
    seconds = float(value or 0)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m{rest:02d}s"


def _counts(counts: dict[str, Any] | None, order: tuple[str, ...]) -> str:
    if not counts:
        return "-"
    return "  ".join(f"{key} {counts.get(key, 0)}" for key in order if key in counts)


def _pool_view(entry: dict[str, Any], phases: dict[str, int]) -> RenderableType:
    running = entry.get("running") or []
    queued = entry.get("queued") or []
    limit = entry.get("limit")
    saturated = limit is not None and len(running) >= int(limit)
    header = Text.assemble(
        (f"pool {entry.get('pool')}", "bold"),
        "  API connections ",
        (f"{len(running)}/{limit}", "bold red" if saturated else "bold green"),
        "  queued ",
        (str(len(queued)), "bold yellow" if queued else "bold"),
        f"  (queue timeout {_seconds(entry.get('queueTimeoutSeconds'))})",
    )
    lines: list[RenderableType] = [header]
    if entry.get("specError"):
        lines.append(Text(f"spec error: {entry['specError']}", style="red"))

    connections = Table(title=None, expand=False, show_edge=False, pad_edge=False)
    connections.add_column("State")
    connections.add_column("Kind")
    connections.add_column("Target")
    connections.add_column("For", justify="right")
    for state, style, items, age in (
        ("running", "green", running, "ageSeconds"),
        ("queued", "yellow", queued, "waitingSeconds"),
    ):
        for item in items:
            connections.add_row(
                Text(state, style=style),
                str(item.get("kind")),
                str(item.get("target")),
                _seconds(item.get(age)),
            )
    if running or queued:
        lines.append(connections)
    else:
        lines.append(Text("no API connections open", style="dim"))

    steps = entry.get("steps") or {}
    finished = "  ".join(f"{phase} {count}" for phase, count in sorted(phases.items()))
    lines.append(
        Text.assemble(
            ("agents ", "bold"),
            _counts(entry.get("agents"), ("starting", "idle", "busy", "failed", "total")),
            f"   waiting builds {entry.get('waitingBuilds', 0)}",
        )
    )
    lines.append(
        Text.assemble(
            ("steps ", "bold"),
            _counts(steps, ("queued", "running")),
            f"   finished: {finished}" if finished else "",
        )
    )
    return Group(*lines, Text(""))


def render(snapshot: Snapshot) -> RenderableType:
    """Every pool of the snapshot, one block each."""
    if not snapshot.pools:
        return Text(f"no pools served ({snapshot.time})", style="dim")
    views = [
        _pool_view(entry, snapshot.phases.get(str(entry.get("pool")), {}))
        for entry in snapshot.pools
    ]
    return Group(Text(f"as of {snapshot.time}", style="dim"), *views)


def print_snapshot(snapshot: Snapshot, console: Console | None = None) -> None:
    (console or Console()).print(render(snapshot))
