"""When an exec session changes hands: the session side of the quota policy (pure).

The pool's quota (`kube.quota`) keeps a reserve of slots for short requests, so status
writes and Events never need a session's slot. What remains to decide is when a build gives
its session slot to another build:

1. **Between steps of a build: never**, unless requests starve (every slot is a session's:
   a limit of 1, or one just lowered) and the session had its `hold`, or the limit was lowered
   below the sessions open. A build's steps keep going through one session, which is what
   batching saves; yielding at step boundaries would cost one exec per step exactly when
   connections are scarce (the seed's situation).
2. **At a build boundary** (the build has nothing queued): at once when builds wait for a
   session or requests starve, else after `sessions.linger`.
3. **During a long step**: once the step has run `detach_after` while builds wait for a
   session (or `hold` while requests starve), the session detaches: the stream is dropped,
   the step runs on in its container, and the build collects the result later with a new
   session (`poll_delay`), ahead of builds that have not started.

Decisions take a `QuotaState` snapshot and plain numbers; the runner does the waiting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Protocol

__all__ = [
    "MIN_HOLD",
    "POLL_CAP",
    "QuotaState",
    "close_between_steps",
    "detach_mid_step",
    "poll_delay",
    "release_when_idle",
]

# However contended, a session is held this long before it detaches: a session opened to
# collect a detached step must hear the driver's answer (started, output, finished) first, or
# polling would never learn anything.
MIN_HOLD: Final = 0.2
# A detached step is collected within this long of its end, at most.
POLL_CAP: Final = 30.0
# A detached step is looked at again after this share of the time it has run so far: a
# 20-minute step costs a few dozen short sessions, not one per poll interval.
POLL_SHARE: Final = 0.1


class _QuotaView(Protocol):
    @property
    def requests_starved(self) -> bool: ...
    @property
    def session_contended(self) -> bool: ...
    @property
    def sessions_running(self) -> int: ...
    @property
    def session_limit(self) -> int: ...


@dataclass(frozen=True)
class QuotaState:
    """What a session holder needs to know about its pool's quota."""

    requests_starved: bool = False  # requests wait and none runs: sessions hold every slot
    sessions_waiting: bool = False  # builds wait for a session slot
    over_limit: bool = False  # more sessions open than the (lowered) session limit

    @classmethod
    def of(cls, quota: _QuotaView) -> QuotaState:
        over = quota.sessions_running > quota.session_limit
        return cls(
            requests_starved=quota.requests_starved,
            sessions_waiting=quota.session_contended and not over,
            over_limit=over,
        )


def close_between_steps(state: QuotaState, *, batching: bool, held: float, hold: float) -> bool:
    """Close the session after a step although the build has more to run? (rule 1)"""
    if not batching:
        return True  # the one-exec-per-step baseline
    return state.over_limit or (state.requests_starved and held >= hold)


def release_when_idle(state: QuotaState) -> bool:
    """Close an idle build's session now instead of lingering? (rule 2)"""
    return state.sessions_waiting or state.requests_starved or state.over_limit


def detach_mid_step(
    state: QuotaState, *, held: float, hold: float, running_for: float, detach_after: float
) -> bool:
    """Give the slot up while the step runs on? (rule 3)"""
    if held < max(hold, MIN_HOLD):
        return False
    if state.requests_starved:
        return True
    return (state.sessions_waiting or state.over_limit) and running_for >= detach_after


def poll_delay(poll_interval: float, running_for: float) -> float:
    """Seconds until a detached step is collected: `poll_interval`, growing with the time the
    step has run (a tenth of it), capped at `POLL_CAP` (never below `poll_interval`)."""
    return max(poll_interval, min(POLL_CAP, running_for * POLL_SHARE))
