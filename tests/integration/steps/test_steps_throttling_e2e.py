"""Throttling is not agent loss: while the API server answers exec with 429 or 503 (with a
Retry-After), a build's next step waits and then runs on the same agent, in its workspace.
The whole operator on the sandbox, with the sandbox's fault injection."""

from __future__ import annotations

from typing import Any

import pytest
from step_client import BuildSteps

from agentpool import USER_AGENT
from agentpool.steps.runner import MAX_SESSION_FAILURES
from agentpool_sandbox.testing import eventually


@pytest.fixture
def sandbox_time_scale() -> float:
    return 0.1


@pytest.mark.parametrize("code", [429, 503])
async def test_a_throttled_exec_waits_and_keeps_the_builds_agent_and_workspace(
    operator: Any, buildsteps: BuildSteps, code: int
) -> None:
    await buildsteps.pool("p", minIdle=2, maxAgents=2, sessions={"linger": "0s"})
    await buildsteps.wait_agents("p", 2)
    await buildsteps.create("s1", "echo kept > ws.txt", build="b", order=0)
    first = (await buildsteps.wait_final("s1"))["s1"]

    async def session_closed() -> bool:
        return (await buildsteps.stats())["exec"]["open"] == 0

    await eventually(session_closed, 20, "the build's session to close")
    throttle = {"code": code, "rate": 1, "verbs": ["exec"], "retryAfterSeconds": 1}
    await buildsteps.faults({"errors": [throttle]})
    await buildsteps.create("s2", "cat ws.txt", build="b", order=1)

    async def refused() -> bool:
        codes = (await buildsteps.stats())["responses"]["byCode"]
        return int(codes.get(str(code), 0)) > MAX_SESSION_FAILURES

    # The operator came back after each Retry-After, more often than failures it would count.
    await eventually(refused, 30, f"{MAX_SESSION_FAILURES + 1} exec requests answered {code}")
    assert (await buildsteps.status("s2")).get("phase") != "Failed"
    await buildsteps.faults({})
    second = (await buildsteps.wait_final("s2"))["s2"]
    stats = await buildsteps.stats()

    assert first["phase"] == "Succeeded"
    assert (second["phase"], second["agent"], second["logTail"]) == (
        "Succeeded",
        first["agent"],
        "kept\n",
    )
    assert second.get("attempts", 1) == 1
    operator_requests = stats["requests"]["byClient"][USER_AGENT]
    assert operator_requests.get("byVerb", {}).get("delete", 0) == 0  # no agent was deleted
