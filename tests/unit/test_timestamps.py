"""Reading and writing the timestamps of Kubernetes objects."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from agentpool.timestamps import format_time, now, parse_time, rfc3339

T0 = datetime(2026, 11, 24, 10, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-24T10:00:00Z", T0),
        ("2026-11-24T10:00:00.123456Z", T0.replace(microsecond=123456)),
        ("2026-11-24T11:00:00+01:00", T0),
        ("2026-11-24T10:00:00", T0),  # naive: taken as UTC
    ],
)
def test_api_server_timestamps_parse_to_aware_utc_moments(text: str, expected: datetime) -> None:
    moment = parse_time(text)

    assert moment == expected
    assert moment is not None and moment.tzinfo is not None


@pytest.mark.parametrize("value", [None, "", "yesterday", 1700000000, {"time": "x"}])
def test_missing_or_garbage_timestamps_are_none(value: object) -> None:
    assert parse_time(value) is None


def test_datetimes_from_a_typed_client_pass_through_aware() -> None:
    assert parse_time(T0) == T0
    assert parse_time(T0.replace(tzinfo=None)) == T0


def test_formats_are_utc_with_seconds_or_microseconds() -> None:
    moment = datetime(2026, 11, 24, 11, 0, 0, 5, tzinfo=timezone(timedelta(hours=1)))

    assert format_time(moment) == "2026-11-24T10:00:00Z"
    assert rfc3339(moment) == "2026-11-24T10:00:00.000005Z"
    assert parse_time(rfc3339(moment)) == moment


def test_now_is_aware_utc() -> None:
    assert now().tzinfo is UTC
