"""A lost agent (its pod deleted mid-step) is AgentLost, never a silent move: a build's first
step may be retried on a new agent; a build that already ran steps on the lost agent is never
continued elsewhere as if its workspace were there: with retries it runs again from its first
step on a new agent, without it fails."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from step_client import STEPS_NAMESPACE, BuildSteps

from agentpool.config import Config
from agentpool.kube import client as kube
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


async def checkout_compile_deploy(
    buildsteps: BuildSteps, build: str, compile_script: str, *, retries: int, **checkout: Any
) -> None:
    """A pool of two warm agents and a build: checkout writes src.txt, compile runs
    `compile_script` (with `retries`), deploy reads src.txt."""
    await buildsteps.pool("p", minIdle=2, maxAgents=3)
    await buildsteps.wait_agents("p", 2)
    await buildsteps.create("checkout", "echo code > src.txt", build=build, order=0, **checkout)
    await buildsteps.create("compile", compile_script, build=build, order=1, retries=retries)
    await buildsteps.create("deploy", "cat src.txt", build=build, order=2)


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


async def test_a_build_that_lost_its_agent_is_rerun_from_its_first_step_on_a_new_agent(
    operator: Any, buildsteps: BuildSteps, reader: Any, tmp_path: Path
) -> None:
    tried = tmp_path / "tried"  # outside the agents: the re-runs see it
    go = tmp_path / "go"  # the re-run of checkout waits for it: the test looks meanwhile
    await buildsteps.pool("p", minIdle=2, maxAgents=3)
    await buildsteps.wait_agents("p", 2)
    checkout_script = (
        f"echo code > src.txt; [ -e {tried} ] && until [ -e {go} ]; do sleep 0.05; done; :"
    )
    await buildsteps.create("checkout", checkout_script, build="d", order=0)
    compile_script = f"if [ -e {tried} ]; then cat src.txt; else {waiting(tried)}; fi"
    await buildsteps.create("compile", compile_script, build="d", order=1, retries=2)
    await buildsteps.create("deploy", "cat src.txt", build="d", order=2)

    lost = await kill_agent_under(buildsteps, "compile", tried)
    rerunning = await buildsteps.wait_phase("checkout", "Running", within=30)
    pending = await buildsteps.status("compile")
    go.touch()
    statuses = await buildsteps.wait_final("compile", "deploy", within=60)
    checkout = await buildsteps.status("checkout")  # re-run before compile could run again

    assert (rerunning["attempts"], "exitCode" in rerunning) == (2, False)
    assert rerunning["agent"] != lost
    assert (pending["phase"], pending["reason"], pending["attempts"]) == (
        "Queued",
        "RerunAfterAgentLost",
        2,
    )
    assert "agent" not in pending  # the lost agent no longer describes it
    assert f"agent {lost} was lost" in pending["message"]
    compile_, deploy = statuses["compile"], statuses["deploy"]
    assert (checkout["phase"], checkout["attempts"], checkout["exitCode"]) == ("Succeeded", 2, 0)
    assert checkout["agent"] != lost
    assert (compile_["phase"], compile_["attempts"], compile_["logTail"]) == (
        "Succeeded",
        2,
        "code\n",
    )
    assert compile_["agent"] == checkout["agent"]
    assert (deploy["phase"], deploy["attempts"], deploy["logTail"]) == ("Succeeded", 1, "code\n")

    async def rerun_events() -> dict[str, list[str]]:
        reasons = {step: await reader.reasons(step) for step in ("checkout", "compile")}
        return reasons if all("RerunAfterAgentLost" in r for r in reasons.values()) else {}

    reasons = await eventually(rerun_events, 10, "RerunAfterAgentLost Events")
    assert reasons["checkout"] == ["RerunAfterAgentLost"]  # one Event per re-run step
    assert reasons["compile"] == ["RerunAfterAgentLost"]  # not also RetryAgentLost
    events = await reader.events("compile")
    assert f"agent {lost} was lost" in events[0]["message"]
    assert "runs again from step checkout" in events[0]["message"]


async def test_a_build_whose_steps_on_the_lost_agent_were_deleted_is_not_rerun(
    operator: Any, buildsteps: BuildSteps, tmp_path: Path
) -> None:
    started = tmp_path / "started"
    await checkout_compile_deploy(
        buildsteps, "f", waiting(started), retries=2, ttlSecondsAfterFinished=0
    )
    await eventually(lambda: _gone(buildsteps, "checkout"), 10, "checkout to be deleted")

    lost = await kill_agent_under(buildsteps, "compile", started)
    statuses = await buildsteps.wait_final("compile", "deploy", within=60)

    compile_, deploy = statuses["compile"], statuses["deploy"]
    assert (compile_["phase"], compile_["reason"], compile_["attempts"]) == (
        "Failed",
        "AgentLost",
        1,
    )
    assert f"agent {lost}" in compile_["message"] and "were deleted" in compile_["message"]
    assert (deploy["phase"], deploy["reason"]) == ("Skipped", "PreviousStepFailed")


async def _gone(buildsteps: BuildSteps, step: str) -> bool:
    return await buildsteps.status(step) == {}


async def test_an_agent_lost_between_two_steps_reruns_the_build_before_the_next_one(
    start_operator: Callable[..., Awaitable[Any]], operator_config: Config, buildsteps: BuildSteps
) -> None:
    # The build keeps its agent between its steps (its grace), as a pipeline adding steps does.
    await start_operator(dataclasses.replace(operator_config, build_grace=60.0))
    await buildsteps.pool("p", minIdle=2, maxAgents=3)
    await buildsteps.wait_agents("p", 2)
    await buildsteps.create("checkout", "echo code > src.txt", build="e", order=0)
    lost = (await buildsteps.wait_final("checkout"))["checkout"]["agent"]
    await buildsteps.delete_pod(lost)

    await buildsteps.create("compile", "cat src.txt", build="e", order=1, retries=1)
    compile_ = (await buildsteps.wait_final("compile", within=60))["compile"]
    checkout = await buildsteps.status("checkout")

    assert (checkout["phase"], checkout["attempts"]) == ("Succeeded", 2)
    assert checkout["agent"] != lost
    assert (compile_["phase"], compile_["attempts"], compile_["logTail"]) == (
        "Succeeded",
        2,
        "code\n",
    )
    assert compile_["agent"] == checkout["agent"]


async def test_an_operator_that_crashed_mid_rerun_runs_the_rerun_steps_again_first(
    start_operator: Callable[[], Awaitable[Any]], buildsteps: BuildSteps, tmp_path: Path
) -> None:
    tried = tmp_path / "tried"
    old = await start_operator()
    compile_script = f"if [ -e {tried} ]; then cat src.txt; else {waiting(tried)}; fi"
    await checkout_compile_deploy(buildsteps, "d", compile_script, retries=2)
    lost: str = (await buildsteps.wait_phase("compile", "Running"))["agent"]
    await eventually(tried.exists, 10, "compile to start")
    await old.stop()
    # What a crash leaves once the re-run wrote the earlier steps' status, and not yet the
    # lost step's (still Running on its agent).
    await buildsteps.delete_pod(lost)
    rerun = {"phase": "Queued", "reason": "RerunAfterAgentLost", "attempts": 2}
    stale = dict.fromkeys(("agent", "session", "exitCode", "finishedAt", "logTail", "logBytes"))
    await buildsteps.objects.patch_namespaced_custom_object_status(
        kube.GROUP,
        kube.VERSION,
        STEPS_NAMESPACE,
        kube.BUILDSTEPS,
        "checkout",
        {"status": {**rerun, **stale}},
        _content_type="application/merge-patch+json",
    )

    await start_operator()
    statuses = await buildsteps.wait_final("compile", "deploy", within=60)
    checkout = await buildsteps.status("checkout")

    compile_, deploy = statuses["compile"], statuses["deploy"]
    assert (checkout["phase"], checkout["attempts"]) == ("Succeeded", 2)
    assert checkout["agent"] != lost
    assert (compile_["phase"], compile_["attempts"], compile_["logTail"]) == (
        "Succeeded",
        2,
        "code\n",
    )
    assert compile_["agent"] == checkout["agent"]
    assert (deploy["phase"], deploy["logTail"]) == ("Succeeded", "code\n")


async def test_without_retries_a_build_that_lost_its_agent_fails_and_skips_the_rest(
    operator: Any, buildsteps: BuildSteps, tmp_path: Path
) -> None:
    started = tmp_path / "started"
    await checkout_compile_deploy(buildsteps, "d", waiting(started), retries=0)

    lost = await kill_agent_under(buildsteps, "compile", started)
    statuses = await buildsteps.wait_final("checkout", "compile", "deploy", within=60)

    compile_, deploy = statuses["compile"], statuses["deploy"]
    assert (statuses["checkout"]["agent"], statuses["checkout"]["attempts"]) == (lost, 1)
    assert (compile_["phase"], compile_["reason"], compile_["agent"]) == (
        "Failed",
        "AgentLost",
        lost,
    )
    assert compile_["attempts"] == 1  # not retried where src.txt does not exist
    assert "workspace is gone" in compile_["message"]
    assert "agentpool build rerun d" in compile_["message"]
    assert (deploy["phase"], deploy["reason"]) == ("Skipped", "PreviousStepFailed")


async def test_after_a_restart_a_build_that_lost_its_agent_is_not_rerun_without_its_steps(
    start_operator: Callable[[], Awaitable[Any]], buildsteps: BuildSteps, tmp_path: Path
) -> None:
    started = tmp_path / "started"
    old = await start_operator()
    await buildsteps.pool("p", minIdle=2, maxAgents=3)
    await buildsteps.wait_agents("p", 2)
    await buildsteps.create("checkout", "echo code > src.txt", build="g")
    home = (await buildsteps.wait_final("checkout"))["checkout"]["agent"]
    await old.stop()
    # The new operator knows checkout only from its listing: it cannot run it again.
    await start_operator()
    script = f"if [ -e {started} ]; then cat src.txt; else {waiting(started)}; fi"
    await buildsteps.create("compile", script, build="g", order=1, retries=2)

    lost = await kill_agent_under(buildsteps, "compile", started)
    compile_ = (await buildsteps.wait_final("compile", within=60))["compile"]

    assert lost == home  # the build went back to its workspace
    assert (compile_["phase"], compile_["reason"], compile_["attempts"]) == (
        "Failed",
        "AgentLost",
        1,
    )
    assert "before an operator restart" in compile_["message"]
