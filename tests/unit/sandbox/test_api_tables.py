"""Server-side printing: JSONPath subset, ages and Table rows."""

from __future__ import annotations

from datetime import UTC, datetime

from agentpool.sandbox.resources import Registry
from agentpool.sandbox.tables import age, human_duration, jsonpath, table


def test_jsonpath_fields_indexes_and_filters() -> None:
    obj = {
        "status": {
            "conditions": [{"type": "A", "status": "x"}, {"type": "Ready", "status": "True"}]
        }
    }
    assert jsonpath(obj, '.status.conditions[?(@.type=="Ready")].status') == ["True"]
    assert jsonpath(obj, ".status.conditions[0].type") == ["A"]
    assert jsonpath(obj, ".status.missing") == []


def test_human_duration_matches_kubernetes_rounding() -> None:
    rendered = [
        human_duration(s) for s in (5, 119, 150, 600, 3 * 3600 + 60, 50 * 3600, 400 * 86400)
    ]
    assert rendered == ["5s", "119s", "2m30s", "10m", "3h1m", "2d2h", "400d"]


def test_age_of_a_timestamp() -> None:
    now = datetime(2026, 1, 1, 0, 10, tzinfo=UTC)
    assert age("2026-01-01T00:00:00Z", now) == "10m"


def test_pod_table_has_default_columns() -> None:
    pods = Registry().lookup("", "v1", "pods")
    assert pods is not None
    pod = {
        "metadata": {"name": "p", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"containers": [{"name": "c"}]},
        "status": {"phase": "Running", "containerStatuses": [{"ready": True, "restartCount": 2}]},
    }
    rendered = table(pods, [pod], "7")
    assert [c["name"] for c in rendered["columnDefinitions"]] == [
        "Name",
        "Ready",
        "Status",
        "Restarts",
        "Age",
    ]
    assert rendered["rows"][0]["cells"][:4] == ["p", "1/1", "Running", "2"]
    assert rendered["rows"][0]["object"]["kind"] == "PartialObjectMetadata"
