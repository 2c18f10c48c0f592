"""When a session changes hands: plain data in, a decision out."""

from __future__ import annotations

import pytest

from agentpool.steps.handover import (
    MIN_HOLD,
    POLL_CAP,
    QuotaState,
    close_between_steps,
    detach_mid_step,
    poll_delay,
    release_when_idle,
)

QUIET = QuotaState()
BUILDS_WAIT = QuotaState(sessions_waiting=True)
STARVED = QuotaState(requests_starved=True)
OVER = QuotaState(over_limit=True)


def test_a_build_keeps_its_session_between_steps_while_builds_wait() -> None:
    assert not close_between_steps(BUILDS_WAIT, batching=True, held=60.0, hold=0.2)
    assert not close_between_steps(QUIET, batching=True, held=60.0, hold=0.2)


def test_starved_requests_get_the_slot_between_steps_after_the_hold() -> None:
    assert not close_between_steps(STARVED, batching=True, held=0.1, hold=0.2)
    assert close_between_steps(STARVED, batching=True, held=0.2, hold=0.2)


def test_a_lowered_limit_closes_sessions_over_it_at_the_next_step() -> None:
    assert close_between_steps(OVER, batching=True, held=0.0, hold=0.2)


def test_without_batching_every_step_has_its_own_session() -> None:
    assert close_between_steps(QUIET, batching=False, held=0.0, hold=0.2)


@pytest.mark.parametrize(
    ("state", "release"), [(QUIET, False), (BUILDS_WAIT, True), (STARVED, True), (OVER, True)]
)
def test_an_idle_build_hands_its_session_over_when_anyone_needs_it(
    state: QuotaState, release: bool
) -> None:
    assert release_when_idle(state) is release


def test_a_long_step_detaches_only_while_builds_wait_and_after_detach_after() -> None:
    def detach(state: QuotaState, running_for: float) -> bool:
        return detach_mid_step(
            state, held=running_for, hold=0.2, running_for=running_for, detach_after=2.0
        )

    assert not detach(QUIET, 3600.0)
    assert not detach(BUILDS_WAIT, 1.9)
    assert detach(BUILDS_WAIT, 2.0)
    assert detach(OVER, 2.0)
    assert detach(STARVED, 0.2)  # requests cannot move at all: do not wait for detachAfter


def test_a_session_collecting_a_detached_step_hears_the_driver_before_detaching_again() -> None:
    # The step has run long, but the session was opened just now (and session_hold is 0).
    def detach(held: float) -> bool:
        return detach_mid_step(BUILDS_WAIT, held=held, hold=0.0, running_for=60.0, detach_after=2.0)

    assert not detach(0.0)
    assert not detach(MIN_HOLD / 2)
    assert detach(MIN_HOLD)


def test_a_detached_step_is_polled_less_often_the_longer_it_runs() -> None:
    assert poll_delay(2.0, running_for=3.0) == 2.0
    assert poll_delay(2.0, running_for=100.0) == 10.0
    assert poll_delay(2.0, running_for=1200.0) == POLL_CAP
    assert poll_delay(60.0, running_for=1200.0) == 60.0  # never below the pool's interval
