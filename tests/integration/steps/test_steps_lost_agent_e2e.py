"""A lost agent (its pod deleted mid-step) is AgentLost, never a silent move: a build's first
step may be retried on a new agent; a step whose build already ran on the lost agent is not
continued elsewhere as if the build's workspace were there."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from step_client import BuildSteps

from agentpool_sandbox.testing import eventually


def waiting(marker: Path) -> str:
    """A script that says it started in `marker` (outside the agents: the test sees it wherever
    the build's workspace is) and runs until its agent is killed."""
    return f"touch {marker}; while :; do sleep 0.05; done"


@pytest.fixture
def sandbox_time_scale() -> float:
    return 0.1


async def kill_agent_under(buildsteps: BuildSteps, step: str, marker: Path) -> str:
    agent: str = (await buildsteps.wait_phase(step, "Running"))["agent"]
    await eventually(marker.exists, 10, f"step {step} to start")
    await buildsteps.delete_pod(agent)
    return agent


async def test_a_builds_first_step_is_retried_on_a_new_agent_when_its_agent_is_lost(
    operator: Any, buildsteps: BuildSteps, tmp_path: Path
) -> None:
    await buildsteps.pool("p", minIdle=2, maxAgents=3)
    await buildsteps.wait_agents("p", 2)
    tried = tmp_path / "tried"  # outside the agents: seen by the retry on another agent
    script = f"if [ -e {tried} ]; then echo again; else {waiting(tried)}; fi"
    await buildsteps.create("first", script, build="b", retries=1)

    lost = await kill_agent_under(buildsteps, "first", tried)
    done = (await buildsteps.wait_final("first", within=60))["first"]

    assert (done["phase"], done["attempts"], done["logTail"]) == ("Succeeded", 2, "again\n")
    assert done["agent"] != lost


async def test_without_retries_a_lost_agent_fails_the_step_as_agent_lost_naming_it(
    operator: Any, buildsteps: BuildSteps, tmp_path: Path
) -> None:
    started = tmp_path / "started"
    await buildsteps.pool("p", minIdle=1, maxAgents=2)
    await buildsteps.create("only", waiting(started), build="c", retries=0)

    lost = await kill_agent_under(buildsteps, "only", started)
    done = (await buildsteps.wait_final("only", within=60))["only"]

    assert (done["phase"], done["reason"], done["agent"]) == ("Failed", "AgentLost", lost)


async def test_a_build_is_not_continued_on_a_new_agent_without_its_workspace(
    operator: Any, buildsteps: BuildSteps, tmp_path: Path
) -> None:
    started = tmp_path / "started"
    await buildsteps.pool("p", minIdle=2, maxAgents=3)
    await buildsteps.wait_agents("p", 2)
    await buildsteps.create("checkout", "echo code > src.txt", build="d", order=0)
    await buildsteps.create("compile", waiting(started), build="d", order=1, retries=2)
    await buildsteps.create("deploy", "cat src.txt", build="d", order=2)

    lost = await kill_agent_under(buildsteps, "compile", started)
    statuses = await buildsteps.wait_final("checkout", "compile", "deploy", within=60)

    compile_, deploy = statuses["compile"], statuses["deploy"]
    assert statuses["checkout"]["agent"] == lost
    assert (compile_["phase"], compile_["reason"], compile_["agent"]) == (
        "Failed",
        "AgentLost",
        lost,
    )
    assert compile_["attempts"] == 1  # not retried where src.txt does not exist
    assert "workspace is gone" in compile_["message"]
    assert (deploy["phase"], deploy["reason"]) == ("Skipped", "PreviousStepFailed")
