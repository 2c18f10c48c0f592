"""A failed Kubernetes API call, and a series of them: back-off and reports to humans.

`ApiFailure` is what a caller keeps of a failed call (status, the server's words, its
Retry-After); `FailureSeries` tracks consecutive failures of one kind of call of one owner
(a pool's pod creations, say) with the shared back-off policy (`kube.backoff`) and decides
when to tell humans: the first failure at once, later ones at most once per interval with
their count. No I/O.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from kubernetes_asyncio.client.exceptions import ApiException

from agentpool.kube.backoff import (
    Backoff,
    BackoffPolicy,
    is_retryable,
    is_throttled,
    retry_after_seconds,
)
from agentpool.kube.quota import QuotaTimeout

__all__ = ["ApiFailure", "FailureSeries", "Report", "api_message", "api_status_text"]


@dataclass(frozen=True)
class ApiFailure:
    """A failed API call, as the back-off and the reports need it.

    ``status``: the HTTP status, None when no answer came (network failure, or no quota slot
    in time). ``message``: what the API server said (its Status reason and message).
    ``retry_after``: the server's Retry-After on 429/503, a floor of the back-off.
    """

    status: int | None
    message: str
    retry_after: float | None = None

    @property
    def throttled(self) -> bool:
        return is_throttled(self.status)

    @property
    def retryable(self) -> bool:
        return is_retryable(self.status)

    @classmethod
    def of(cls, error: BaseException) -> ApiFailure:
        if isinstance(error, ApiException):
            status = error.status or None
            retry_after = retry_after_seconds(error.headers) if is_throttled(status) else None
            return cls(status, api_status_text(error), retry_after)
        if isinstance(error, QuotaTimeout):
            return cls(None, str(error))
        return cls(None, f"{type(error).__name__}: {error}" if str(error) else repr(error))


@dataclass(frozen=True)
class Report:
    """What to tell humans now about a kind of failure: ``count`` failures since the
    previous report (``first``: the first of the series)."""

    count: int
    first: bool


class FailureSeries:
    """Consecutive failures of one kind of API call of one pool: back-off and reports (pure).

    `failed` records a failure in the back-off (Retry-After as its floor) and says whether to
    report it: the first failure at once, later ones at most once per `report_every` seconds
    with their count, so a server failing every request costs one log line (and Event) per
    interval. `succeeded` ends the series and returns how many failures it had.
    """

    def __init__(
        self,
        policy: BackoffPolicy,
        *,
        report_every: float,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.backoff = Backoff(policy, clock=clock, rand=rand)
        self.last: ApiFailure | None = None
        self._report_every = report_every
        self._clock = clock
        self._reported_at: float | None = None
        self._unreported = 0

    @property
    def failures(self) -> int:
        return self.backoff.failures

    @property
    def failing(self) -> bool:
        return self.backoff.failing

    def remaining(self) -> float:
        """Seconds until the next try is allowed (0: now)."""
        return self.backoff.remaining()

    def failed(self, failure: ApiFailure) -> Report | None:
        """Record a failure; the report to make now, if any."""
        self.backoff.failed(failure.message, retry_after=failure.retry_after)
        self.last = failure
        self._unreported += 1
        now = self._clock()
        first = self._reported_at is None
        if self._reported_at is not None and now - self._reported_at < self._report_every:
            return None
        self._reported_at = now
        count, self._unreported = self._unreported, 0
        return Report(count, first)

    def succeeded(self) -> int:
        """Record a success; returns the failures in a row it ends (0: none)."""
        failures = self.backoff.failures
        self.backoff.succeeded()
        self.last = None
        self._reported_at = None
        self._unreported = 0
        return failures


def api_status_text(error: ApiException) -> str:
    """The API server's answer in one line: HTTP status, Status reason and message."""
    try:
        body = json.loads(error.body or "{}")
    except (TypeError, ValueError):
        body = {}
    reason = (body.get("reason") if isinstance(body, dict) else None) or error.reason
    text = f"HTTP {error.status}"
    if reason:
        text += f" {reason}"
    return f"{text}: {api_message(error)}"


def api_message(error: ApiException) -> str:
    try:
        body = json.loads(error.body or "{}")
    except (TypeError, ValueError):
        body = {}
    message = body.get("message") if isinstance(body, dict) else None
    return str(message or error.reason or error)
