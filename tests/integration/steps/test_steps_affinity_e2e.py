"""A build stays on its agent, where its workspace is: across an operator restart, for a step
appended after the build went idle, and after a crash that left only the placement written.
Two agents; build `a` holds the one a free build takes first (agents go by name), so a build
that lost track of its own agent would land there."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from step_client import STEPS_NAMESPACE, BuildSteps

from agentpool.kube import client as kube

WAIT_FOR_GO = 'while [ ! -e "$HOME/go" ]; do sleep 0.05; done'


@pytest.fixture
def sandbox_time_scale() -> float:
    return 0.1


async def hold_first_agent(buildsteps: BuildSteps) -> str:
    """Build `a` takes the first agent and holds it until `go` appears in its workspace."""
    await buildsteps.pool("p", minIdle=2, maxAgents=2)
    await buildsteps.wait_agents("p", 2)
    await buildsteps.create("a0", WAIT_FOR_GO, build="a")
    agent: str = (await buildsteps.wait_phase("a0", "Running"))["agent"]
    return agent


async def let_go(buildsteps: BuildSteps, agent: str) -> None:
    (buildsteps.home(agent) / "go").touch()


async def test_a_step_appended_after_its_build_went_idle_runs_in_the_builds_workspace(
    operator: Any, buildsteps: BuildSteps
) -> None:
    first = await hold_first_agent(buildsteps)
    await buildsteps.create("b0", "echo b > mark", build="b")
    home = (await buildsteps.wait_final("b0"))["b0"]["agent"]
    await let_go(buildsteps, first)
    await buildsteps.wait_final("a0")
    await buildsteps.wait_agents("p", 2)  # both builds gave their agents back

    await buildsteps.create("b1", "cat mark", build="b", order=1)
    appended = (await buildsteps.wait_final("b1"))["b1"]

    assert home != first
    assert (appended["phase"], appended["agent"], appended["logTail"]) == ("Succeeded", home, "b\n")


async def test_after_an_operator_restart_a_build_goes_on_in_its_workspace(
    start_operator: Callable[[], Awaitable[Any]], buildsteps: BuildSteps
) -> None:
    old = await start_operator()
    first = await hold_first_agent(buildsteps)
    await buildsteps.create("b0", "echo b > mark", build="b", order=0)
    await buildsteps.create("b1", WAIT_FOR_GO, build="b", order=1)
    await buildsteps.create("b2", "cat mark", build="b", order=2)
    home = (await buildsteps.wait_phase("b1", "Running"))["agent"]
    await let_go(buildsteps, first)
    await buildsteps.wait_final("a0")

    await old.stop()
    await start_operator()
    await let_go(buildsteps, home)
    statuses = await buildsteps.wait_final("b1", "b2")

    assert home != first
    assert {name: s["agent"] for name, s in statuses.items()} == {"b1": home, "b2": home}
    assert (statuses["b2"]["phase"], statuses["b2"]["logTail"]) == ("Succeeded", "b\n")


async def test_a_step_placed_before_a_crash_is_not_run_again_on_another_agent(
    start_operator: Callable[[], Awaitable[Any]], buildsteps: BuildSteps
) -> None:
    old = await start_operator()
    first = await hold_first_agent(buildsteps)
    await buildsteps.create("s", 'echo run >>"$HOME/count"; echo done', build="s")
    home = (await buildsteps.wait_final("s"))["s"]["agent"]
    await let_go(buildsteps, first)
    await buildsteps.wait_final("a0")
    await old.stop()
    # What a crash right after the step was sent leaves: only the placement write went out.
    placed = {"phase": "Queued", "agent": home, "attempts": 1, "reason": "Queued"}
    cleared = dict.fromkeys(("exitCode", "startedAt", "finishedAt", "logTail", "logBytes"))
    await buildsteps.objects.patch_namespaced_custom_object_status(
        kube.GROUP,
        kube.VERSION,
        STEPS_NAMESPACE,
        kube.BUILDSTEPS,
        "s",
        {"status": {**placed, **cleared, "session": None}},
        _content_type="application/merge-patch+json",
    )

    await start_operator()
    again = (await buildsteps.wait_final("s"))["s"]
    agents = buildsteps.home("*").parent.parent
    runs = "".join(f.read_text() for f in agents.glob("*/main/count"))

    assert home != first
    assert (again["phase"], again["agent"], again["logTail"]) == ("Succeeded", home, "done\n")
    assert runs == "run\n"
