"""Wall-clock time as the operator reads and writes it on Kubernetes objects: always UTC.

Comparing an aware and a naive datetime raises, so every moment leaving this module is aware.
"""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["format_time", "now", "parse_time", "rfc3339"]


def now() -> datetime:
    return datetime.now(UTC)


def parse_time(value: object) -> datetime | None:
    """RFC 3339 as the API server writes it (trailing Z, with or without fractional seconds),
    or a datetime from a typed client; a naive time is taken as UTC. None for anything else
    (a missing field, garbage), so that bad data never fails a handler."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str) and value:
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    else:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with seconds, as Kubernetes writes metav1.Time."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339(moment: datetime) -> str:
    """RFC 3339 in UTC with microseconds, so that dispatch latency can be measured."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
