"""Server-side printing: JSONPath subset, ages and Table rows."""

from __future__ import annotations

from datetime import UTC, datetime

from agentpool_sandbox.resources import Registry
from agentpool_sandbox.tables import age, event_cells, human_duration, jsonpath, table


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


def test_pod_restarts_show_the_age_of_the_last_one() -> None:
    pods = Registry().lookup("", "v1", "pods")
    assert pods is not None
    finished = "2020-01-01T00:00:00Z"
    pod = {
        "metadata": {"name": "p", "creationTimestamp": finished},
        "spec": {"containers": [{"name": "c"}]},
        "status": {
            "phase": "Running",
            "containerStatuses": [
                {
                    "restartCount": 3,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": {"exitCode": 1, "finishedAt": finished}},
                }
            ],
        },
    }

    cells = table(pods, [pod], "7")["rows"][0]["cells"]

    assert cells[2] == "CrashLoopBackOff"
    assert cells[3] == f"3 ({age(finished)} ago)"


def test_an_event_row_falls_back_to_event_time_and_series() -> None:
    now = datetime(2026, 1, 1, 0, 10, tzinfo=UTC)
    event = {
        "metadata": {"name": "e.1"},
        "involvedObject": {"kind": "AgentPool", "name": "pool"},
        "type": "Normal",
        "reason": "Scaled",
        "message": " up to 3 ",
        "eventTime": "2026-01-01T00:00:00.123456Z",
        "reportingComponent": "agentpool-operator",
        "series": {"count": 4, "lastObservedTime": "2026-01-01T00:09:00.000000Z"},
    }

    cells = event_cells(event, now)

    assert cells == [
        "60s", "Normal", "Scaled", "agentpool/pool", "", "agentpool-operator", "up to 3",
        "9m59s", 4, "e.1",
    ]  # fmt: skip


def test_event_table_marks_the_wide_columns() -> None:
    events = Registry().lookup("", "v1", "events")
    assert events is not None

    rendered = table(events, [], "1")

    default = [c["name"] for c in rendered["columnDefinitions"] if c["priority"] == 0]
    assert default == ["Last Seen", "Type", "Reason", "Object", "Message"]
