"""Failed API calls of a pool: back-off, what is reported when, and what the pool says."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from kubernetes_asyncio.client.exceptions import ApiException

from agentpool.kube.backoff import BackoffPolicy
from agentpool.kube.failures import ApiFailure, FailureSeries, Report
from agentpool.kube.quota import QuotaTimeout
from agentpool.model import ConditionStatus
from agentpool.pool.readiness import AgentState
from agentpool.pool.scaling import Agent, DeletionReason, PoolSnapshot, plan, pool_conditions
from agentpool.pool.status import creation_failures

NOW = datetime(2026, 12, 4, 12, 0, 0, tzinfo=UTC)
CUR = "a1b2c3d4e5"
POLICY = BackoffPolicy(base=0.1, cap=30.0)
SERVER_SAYS = "Internal error occurred: injected by the sandbox (faults)"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def series(clock: Clock, report_every: float = 30.0) -> FailureSeries:
    # rand 0: every wait is the full exponential step, no jitter below it.
    return FailureSeries(POLICY, report_every=report_every, clock=clock, rand=lambda: 0.0)


def api_error(status: int, reason: str, message: str, **headers: str) -> ApiException:
    error = ApiException(status=status, reason=reason)
    error.body = json.dumps({"kind": "Status", "reason": reason, "message": message})  # type: ignore[assignment]
    error.headers = headers  # type: ignore[assignment]
    return error


ERROR_500 = ApiFailure(500, f"HTTP 500 InternalError: {SERVER_SAYS}")


# --- what a failure is ----------------------------------------------------------------------


def test_a_server_error_is_retryable_and_quotes_the_server() -> None:
    failure = ApiFailure.of(api_error(500, "InternalError", SERVER_SAYS))
    assert failure == ERROR_500
    assert (failure.retryable, failure.throttled, failure.retry_after) == (True, False, None)


def test_throttling_carries_the_servers_retry_after() -> None:
    error = api_error(429, "TooManyRequests", "slow down", **{"Retry-After": "2"})
    failure = ApiFailure.of(error)
    assert (failure.status, failure.throttled, failure.retry_after) == (429, True, 2.0)
    assert failure.message == "HTTP 429 TooManyRequests: slow down"


def test_a_rejected_pod_is_not_retryable() -> None:
    failure = ApiFailure.of(api_error(422, "Invalid", "spec.restartPolicy: Unsupported value"))
    assert (failure.retryable, failure.throttled) == (False, False)


def test_no_answer_or_no_quota_slot_is_retryable() -> None:
    assert ApiFailure.of(OSError("connection refused")).retryable
    timeout = QuotaTimeout(
        "waited 30s for a slot: limit 2", pool="ns/p", limit=2, running=2, queued=1
    )
    quota = ApiFailure.of(timeout)
    assert (quota.status, quota.retryable) == (None, True)
    assert "limit 2" in quota.message


# --- the series: back-off and rate-limited reports ------------------------------------------


def test_failures_back_off_exponentially_and_success_resets() -> None:
    clock = Clock()
    failing = series(clock)
    waits = []
    for _ in range(5):
        failing.failed(ERROR_500)
        waits.append(round(failing.remaining(), 3))
    assert waits == [0.1, 0.2, 0.4, 0.8, 1.6]
    assert failing.succeeded() == 5
    assert (failing.failing, failing.remaining(), failing.last) == (False, 0.0, None)


def test_retry_after_is_a_floor() -> None:
    failing = series(Clock())
    failing.failed(ApiFailure(503, "HTTP 503 ServiceUnavailable: busy", retry_after=5.0))
    assert failing.remaining() == 5.0


def test_first_failure_is_reported_then_one_summary_per_interval_with_the_count() -> None:
    clock = Clock()
    failing = series(clock, report_every=30.0)
    reports = []
    for _ in range(40):  # one failure a second
        reports.append(failing.failed(ERROR_500))
        clock.now += 1.0
    made = [(i, r) for i, r in enumerate(reports) if r is not None]
    assert made == [(0, Report(1, first=True)), (30, Report(30, first=False))]


def test_a_new_series_after_success_is_reported_at_once() -> None:
    clock = Clock()
    failing = series(clock)
    failing.failed(ERROR_500)
    assert failing.failed(ERROR_500) is None
    failing.succeeded()
    assert failing.failed(ERROR_500) == Report(1, first=True)


# --- what the pool says ---------------------------------------------------------------------


def test_creation_failures_quote_the_server_and_the_next_attempt() -> None:
    later = NOW + timedelta(seconds=3)
    reason, message = creation_failures(
        4, ERROR_500.message, throttled=False, next_attempt=later, now=NOW
    ) or ("", "")
    assert reason == "AgentCreateFailing"
    assert SERVER_SAYS in message and "4 attempt(s) in a row" in message
    assert later.isoformat() in message
    throttled = creation_failures(1, "HTTP 429", throttled=True, next_attempt=None, now=NOW)
    assert throttled is not None and throttled[0] == "AgentCreateThrottled"
    assert creation_failures(0, "", throttled=False, next_attempt=None, now=NOW) is None


def test_a_pool_whose_agents_cannot_be_created_is_degraded_and_not_ready() -> None:
    idle = [Agent(f"a{i}", AgentState.READY, created=NOW, template_hash=CUR) for i in range(3)]
    problem = ("AgentCreateFailing", f"agent pods cannot be created: {SERVER_SAYS}")

    ready, degraded = pool_conditions(idle, min_idle=3, max_agents=5, creation_failure=problem)

    assert (ready.status, ready.reason) == (ConditionStatus.FALSE, "AgentCreateFailing")
    assert (degraded.status, degraded.reason) == (ConditionStatus.TRUE, "AgentCreateFailing")
    assert SERVER_SAYS in degraded.message and SERVER_SAYS in ready.message
    ready, degraded = pool_conditions(idle, min_idle=3, max_agents=5)
    assert (ready.status, degraded.status) == (ConditionStatus.TRUE, ConditionStatus.FALSE)


# --- holds in the plan ----------------------------------------------------------------------


def snapshot(*agents: Agent, **kw: object) -> PoolSnapshot:
    base = PoolSnapshot(
        min_idle=3,
        max_agents=5,
        idle_timeout=60.0,
        ephemeral=False,
        template_hash=CUR,
        agents=agents,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def test_held_creations_are_counted_and_reviewed_when_the_hold_ends() -> None:
    until = NOW + timedelta(seconds=2)
    result = plan(snapshot(hold_creations_until=until), NOW)
    assert (result.create, result.held, result.next_review) == (0, 3, until)
    assert plan(snapshot(hold_creations_until=NOW), NOW).create == 3


def test_one_probe_at_a_time_while_creations_fail() -> None:
    # The controller's burst while its creations fail: one in flight at a time.
    assert plan(snapshot(creation_burst=1), NOW).create == 1
    assert plan(snapshot(creation_burst=1, pending_creations=1), NOW).create == 0


def test_held_deletions_keep_agents_as_they_are_until_the_hold_ends() -> None:
    old = NOW - timedelta(seconds=600)
    idle = [
        Agent(f"a{i}", AgentState.READY, created=old, template_hash=CUR, idle_since=old)
        for i in range(5)
    ]
    failed = Agent("f", AgentState.FAILED, created=old, template_hash=CUR)
    until = NOW + timedelta(seconds=4)

    held = plan(snapshot(*idle, failed, hold_deletions_until=until), NOW)
    free = plan(snapshot(*idle, failed), NOW)

    assert (held.deletions, held.create, held.next_review) == ((), 0, until)
    assert {d.name: d.reason for d in free.deletions} == {
        "f": DeletionReason.FAILED,
        "a0": DeletionReason.IDLE_TIMEOUT,
        "a1": DeletionReason.IDLE_TIMEOUT,
    }


def test_a_held_deletion_of_a_full_pool_creates_no_surplus_agent() -> None:
    # A template roll of a full pool replaces one old idle agent at a time: while its
    # deletion is held, its replacement must not be created (it would exceed maxAgents).
    old = [
        Agent(f"o{i}", AgentState.READY, created=NOW, template_hash="0000000000", idle_since=NOW)
        for i in range(5)
    ]
    until = NOW + timedelta(seconds=1)
    assert plan(snapshot(*old, min_idle=5, hold_deletions_until=until), NOW).create == 0
    rolling = plan(snapshot(*old, min_idle=5), NOW)
    assert (len(rolling.deletions), rolling.create) == (1, 1)
