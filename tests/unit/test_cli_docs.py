"""docs/operations.md and the Grafana dashboard follow the metrics catalogue."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import CollectorRegistry

from agentpool.metrics import Catalogue

ROOT = Path(__file__).resolve().parents[2]
ISSUE_METRICS = (
    "agentpool_api_connections_running",
    "agentpool_api_connections_queued",
    "agentpool_api_connections_limit",
    "agentpool_agents",
    "agentpool_agent_launches_total",
    "agentpool_steps_total",
    "agentpool_exec_sessions_total",
    "agentpool_step_dispatch_seconds",
)


def catalogue_names() -> set[str]:
    return {
        f.name + ("_total" if f.type == "counter" else "")
        for f in Catalogue(CollectorRegistry()).registry.collect()
    }


def test_operations_doc_lists_every_metric_with_its_help_text() -> None:
    doc = (ROOT / "docs/operations.md").read_text()
    documented = dict(re.findall(r"^\| `(agentpool_\w+)` \| \w+ \| [\w, ]+ \| (.+) \|$", doc, re.M))

    expected = {
        f.name + ("_total" if f.type == "counter" else ""): f.documentation
        for f in Catalogue(CollectorRegistry()).registry.collect()
    }

    assert documented == expected, "regenerate the table in docs/operations.md"


def test_the_catalogue_has_the_issue_metrics() -> None:
    assert set(ISSUE_METRICS) <= catalogue_names()


def test_dashboard_queries_only_catalogue_metrics_and_covers_the_issue_metrics() -> None:
    dashboard = json.loads((ROOT / "docs/grafana/agentpool-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {
        re.sub(r"_(bucket|sum|count)$", "", name)
        for expr in exprs
        for name in re.findall(r"\bagentpool_\w+", expr)
    }

    assert used <= catalogue_names()
    assert set(ISSUE_METRICS) <= used
    assert dashboard["uid"] and dashboard["title"]
