"""`agentpool status`: parsing what the operator serves and rendering it."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console

from agentpool.status import Snapshot, render, select, steps_by_phase, to_json

METRICS = """\
# HELP agentpool_steps_total BuildSteps that reached a final phase, by phase.
# TYPE agentpool_steps_total counter
agentpool_steps_total{phase="Succeeded",pool="ci/fast"} 7.0
agentpool_steps_total{phase="Failed",pool="ci/fast"} 1.0
agentpool_steps_total{phase="Succeeded",pool="ci/slow"} 2.0
# HELP agentpool_exec_sessions_total Exec sessions.
# TYPE agentpool_exec_sessions_total counter
agentpool_exec_sessions_total{pool="ci/fast"} 3.0
"""


def pool(key: str, **extra: Any) -> dict[str, Any]:
    return {
        "pool": key,
        "limit": 1,
        "queueTimeoutSeconds": 30.0,
        "running": [{"kind": "exec", "target": "ci/fast-abc/agent", "ageSeconds": 12.5}],
        "queued": [{"kind": "create-pod", "target": "ci/fast", "waitingSeconds": 3.25}],
        "agents": {"starting": 0, "idle": 1, "busy": 1, "failed": 0, "total": 2},
        "waitingBuilds": 1,
        "specError": None,
        "steps": {"queued": 2, "running": 1},
        **extra,
    }


def text_of(snapshot: Snapshot) -> str:
    console = Console(width=120, record=True, color_system=None)
    console.print(render(snapshot))
    return console.export_text()


def test_steps_by_phase_reads_the_counter_per_pool() -> None:
    assert steps_by_phase(METRICS) == {
        "ci/fast": {"Succeeded": 7, "Failed": 1},
        "ci/slow": {"Succeeded": 2},
    }


def test_render_shows_limit_running_and_queued_connections() -> None:
    snapshot = Snapshot("2030-01-01T00:00:00Z", [pool("ci/fast")], steps_by_phase(METRICS))

    text = text_of(snapshot)

    assert "API connections 1/1" in text
    assert "queued 1" in text
    assert "ci/fast-abc/agent" in text and "12.5s" in text
    assert "create-pod" in text and "3.2s" in text
    assert "idle 1" in text and "busy 1" in text
    assert "Failed 1" in text and "Succeeded 7" in text


def test_render_without_pools_says_so() -> None:
    assert "no pools served" in text_of(Snapshot("t", []))


def test_select_by_name_namespace_or_key() -> None:
    snapshot = Snapshot("t", [pool("ci/fast"), pool("ci/slow"), pool("qa/fast")])

    def keys(**kw: Any) -> list[str]:
        return [p["pool"] for p in select(snapshot, **kw).pools]

    assert keys(pool="fast", namespace=None) == ["ci/fast", "qa/fast"]
    assert keys(pool="qa/fast", namespace=None) == ["qa/fast"]
    assert keys(pool=None, namespace="ci") == ["ci/fast", "ci/slow"]


def test_json_adds_steps_by_phase_to_each_pool() -> None:
    snapshot = Snapshot("t", [pool("ci/fast")], steps_by_phase(METRICS))

    body = json.loads(to_json(snapshot))

    assert body["pools"][0]["stepsByPhase"] == {"Succeeded": 7, "Failed": 1}
    assert body["pools"][0]["queued"][0]["kind"] == "create-pod"
