"""The back-off policy for every retry of a Kubernetes API call (pure: no I/O, no clients).

One policy, used by every caller that retries: pod creation and deletion, status writes,
exec sessions, the pool's reconcile loop. Delays grow exponentially from ``base`` to ``cap``
with jitter (so that many retriers spread out instead of returning together, as client-go's
``wait.Backoff`` does), and a server's ``Retry-After`` (429, 503) is a floor that is always
honoured. Throttling is not failure: `is_throttled` tells callers that the server asked for
patience, which must never be read as the loss of an agent or a step.

`Backoff` tracks one kind of failure of one pool (one instance per key, injectable clock and
random source); `BackoffPolicy.delay` is the pure arithmetic behind it.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Final

__all__ = [
    "RETRYABLE_STATUSES",
    "THROTTLE_STATUSES",
    "Backoff",
    "BackoffPolicy",
    "is_retryable",
    "is_throttled",
    "retry_after_seconds",
]

# 429 Too Many Requests and 503 Service Unavailable: the server asks the client to come back.
THROTTLE_STATUSES: Final = frozenset({429, 503})
# Worth retrying: throttling, server-side errors, and 0 (no HTTP answer: a network failure).
RETRYABLE_STATUSES: Final = frozenset({0, 429, 500, 502, 503, 504})
# A Retry-After beyond this is a misconfigured server; waiting an hour helps nobody.
MAX_RETRY_AFTER: Final = 600.0


def is_throttled(status: int | None) -> bool:
    """The API server asked for patience (429/503): wait and retry, never count it as loss."""
    return status in THROTTLE_STATUSES


def is_retryable(status: int | None) -> bool:
    """A failure that may go away by itself (throttling, 5xx, no answer at all)."""
    return status is None or status in RETRYABLE_STATUSES


def retry_after_seconds(
    headers: Mapping[str, str] | None, *, now: Callable[[], float] = time.time
) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), else None."""
    if not headers:
        return None
    value = None
    for key, item in headers.items():
        if key.lower() == "retry-after":
            value = str(item).strip()
            break
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = moment.timestamp() - now()
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


@dataclass(frozen=True)
class BackoffPolicy:
    """Exponential back-off with jitter and a cap.

    The n-th consecutive failure waits between ``(1 - jitter)`` and 1 times
    ``min(cap, base * factor ** (n - 1))``: never more than the cap, never less than half of
    the exponential step with the default jitter, so growth stays exponential while retriers
    spread out. A ``Retry-After`` is a floor, with a little jitter above it.
    """

    base: float = 0.1
    cap: float = 30.0
    factor: float = 2.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.base <= 0 or self.cap < self.base or self.factor < 1:
            raise ValueError(f"invalid back-off policy {self}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"back-off jitter must be within [0, 1], not {self.jitter}")

    def ceiling(self, failures: int) -> float:
        """The longest wait after `failures` consecutive failures (no jitter)."""
        if failures <= 0:
            return 0.0
        exponent = min(failures - 1, 64)  # beyond that the cap has long been reached
        return min(self.cap, self.base * self.factor**exponent)

    def delay(
        self,
        failures: int,
        *,
        retry_after: float | None = None,
        rand: Callable[[], float] = random.random,
    ) -> float:
        """Seconds to wait before the next try after `failures` consecutive failures."""
        ceiling = self.ceiling(failures)
        wait = ceiling * (1 - self.jitter * rand())
        if retry_after is not None:
            # The server's word wins over a shorter guess of ours; a little spread keeps a
            # crowd told "1 second" from returning in the same millisecond.
            wait = max(wait, retry_after * (1 + 0.1 * rand()))
        return wait


class Backoff:
    """Consecutive failures of one kind (e.g. pod creation of one pool) and when to try next."""

    def __init__(
        self,
        policy: BackoffPolicy,
        *,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.policy = policy
        self._clock = clock
        self._rand = rand
        self.failures = 0
        self.not_before = 0.0  # clock time of the next allowed try
        self.last_error = ""

    def failed(self, error: str = "", *, retry_after: float | None = None) -> float:
        """Record a failure; returns the seconds to wait before the next try."""
        self.failures += 1
        self.last_error = error
        wait = self.policy.delay(self.failures, retry_after=retry_after, rand=self._rand)
        self.not_before = self._clock() + wait
        return wait

    def succeeded(self) -> None:
        self.failures = 0
        self.not_before = 0.0
        self.last_error = ""

    def remaining(self) -> float:
        """Seconds until the next try is allowed (0: now)."""
        return max(0.0, self.not_before - self._clock())

    @property
    def failing(self) -> bool:
        return self.failures > 0
