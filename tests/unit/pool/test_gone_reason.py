"""An agent is lost only when the API server says its pod is gone, deleting or terminal."""

from __future__ import annotations

from typing import Any

import pytest

from agentpool.pool.agents import gone_reason


def pod(phase: str = "Running", **meta: Any) -> dict[str, Any]:
    return {"metadata": {"name": "agent-1", **meta}, "status": {"phase": phase}}


@pytest.mark.parametrize(
    ("found", "reason"),
    [
        (None, "PodVanished"),
        (pod(deletionTimestamp="2026-12-04T18:00:00Z"), "PodDeleting"),
        (pod("Failed"), "PodTerminated"),
        (pod("Succeeded"), "PodTerminated"),
    ],
)
def test_a_pod_gone_deleting_or_terminal_is_a_lost_agent(
    found: dict[str, Any] | None, reason: str
) -> None:
    assert (gone_reason(found) or "").startswith(reason)


@pytest.mark.parametrize("phase", ["Running", "Pending", "Unknown"])
def test_a_pod_that_still_exists_is_not_lost(phase: str) -> None:
    # Pending: a virtual kubelet may run the containers before the phase says so.
    assert gone_reason(pod(phase)) is None
