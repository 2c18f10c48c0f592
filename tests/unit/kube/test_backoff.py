"""The back-off policy: exponential growth with jitter, a cap, and Retry-After as a floor."""

from __future__ import annotations

import pytest

from agentpool.kube.backoff import (
    Backoff,
    BackoffPolicy,
    is_retryable,
    is_throttled,
    retry_after_seconds,
)

POLICY = BackoffPolicy(base=0.1, cap=5.0, factor=2.0, jitter=0.5)


def test_ceiling_doubles_from_base_up_to_the_cap() -> None:
    assert [POLICY.ceiling(n) for n in range(8)] == [0.0, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0]
    assert POLICY.ceiling(10_000) == 5.0


def test_jitter_keeps_a_wait_between_half_and_all_of_the_ceiling() -> None:
    assert POLICY.delay(3, rand=lambda: 0.0) == pytest.approx(0.4)
    assert POLICY.delay(3, rand=lambda: 1.0) == pytest.approx(0.2)
    assert POLICY.delay(3, rand=lambda: 0.5) == pytest.approx(0.3)


def test_retry_after_is_a_floor_with_a_little_spread_above_it() -> None:
    assert POLICY.delay(1, retry_after=2.0, rand=lambda: 0.0) == pytest.approx(2.0)
    assert POLICY.delay(1, retry_after=2.0, rand=lambda: 1.0) == pytest.approx(2.2)
    # A longer back-off of our own still wins over a short Retry-After.
    assert POLICY.delay(7, retry_after=1.0, rand=lambda: 0.0) == pytest.approx(5.0)


def test_invalid_policies_are_refused() -> None:
    with pytest.raises(ValueError, match="jitter"):
        BackoffPolicy(jitter=1.5)
    with pytest.raises(ValueError, match="invalid"):
        BackoffPolicy(base=1.0, cap=0.5)


def test_tracker_counts_failures_and_says_when_to_try_next() -> None:
    now = [100.0]
    backoff = Backoff(POLICY, clock=lambda: now[0], rand=lambda: 0.0)
    assert backoff.remaining() == 0.0 and not backoff.failing
    assert backoff.failed("boom") == pytest.approx(0.1)
    assert backoff.failed("boom") == pytest.approx(0.2)
    assert backoff.remaining() == pytest.approx(0.2)
    now[0] += 0.15
    assert backoff.remaining() == pytest.approx(0.05)
    assert backoff.failures == 2 and backoff.last_error == "boom"
    backoff.succeeded()
    assert backoff.remaining() == 0.0 and backoff.failures == 0


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"Retry-After": "3"}, 3.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"Retry-After": "-4"}, 0.0),
        ({"Retry-After": "99999"}, 600.0),
        ({"Retry-After": "soon"}, None),
        ({"Retry-After": "Thu, 01 Jan 1970 00:00:10 GMT"}, 5.0),
        ({}, None),
        (None, None),
    ],
)
def test_retry_after_header(headers: dict[str, str] | None, seconds: float | None) -> None:
    assert retry_after_seconds(headers, now=lambda: 5.0) == seconds


def test_throttling_and_retryable_statuses() -> None:
    assert is_throttled(429) and is_throttled(503)
    assert not is_throttled(500) and not is_throttled(404)
    assert all(is_retryable(s) for s in (None, 0, 429, 500, 502, 503, 504))
    assert not any(is_retryable(s) for s in (400, 403, 404, 409, 422))
