"""AgentPool status bodies: the launch- and creation-failure problems, conditions merged in.

Pure: the controller gathers counts and conditions, these functions shape what is written.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from agentpool.model import Condition, merge_condition

__all__ = ["creation_failures", "launch_failures", "with_conditions"]


def launch_failures(
    streak: int, last_failure: str, hold_until: datetime | None, now: datetime
) -> tuple[str, str] | None:
    """The `AgentLaunchFailures` problem (reason, message) while launches fail in a row."""
    if not streak:
        return None
    text = f"{streak} agent launch(es) failed in a row; last: "
    text += last_failure
    if hold_until is not None and hold_until > now:
        text += f"; new agents are held until {hold_until.isoformat()}"
    return ("AgentLaunchFailures", text)


def creation_failures(
    failures: int, last: str, *, throttled: bool, next_attempt: datetime | None, now: datetime
) -> tuple[str, str] | None:
    """The problem (reason, message) while pod creations fail for API reasons, in a row.

    `last` quotes the API server's answer. Throttling (429/503) has a reason of its own: the
    server asks for patience, the template is not at fault.
    """
    if not failures:
        return None
    if throttled:
        reason = "AgentCreateThrottled"
        text = f"the API server throttles agent pod creation ({failures} attempt(s) in a row)"
    else:
        reason = "AgentCreateFailing"
        text = f"agent pods cannot be created ({failures} attempt(s) in a row)"
    text += f": {last}"
    if next_attempt is not None and next_attempt > now:
        text += f"; retrying with back-off, next attempt at {next_attempt.isoformat()}"
    return (reason, text)


def with_conditions(
    status: dict[str, Any],
    conditions: tuple[Condition, ...],
    latest: Mapping[str, Any],
    generation: int | None,
    now: datetime,
) -> dict[str, Any]:
    """`status` with `conditions` merged into those of the `latest` status, and the generation
    it observed; lastTransitionTime carries over where a condition kept its status."""
    merged: list[dict[str, Any]] = list(latest.get("conditions") or [])
    for condition in conditions:
        merged = merge_condition(merged, condition, now)
    status["conditions"] = merged
    if generation is not None:
        status["observedGeneration"] = generation
    return status
