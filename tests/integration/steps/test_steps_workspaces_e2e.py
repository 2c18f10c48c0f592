"""Build workspaces on a reused agent: each build works in a directory of its own (also its
TMPDIR), which its later steps find again, and which the next build on the agent never sees;
`isolation: Shared` keeps one directory for all builds, as a cache would want."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from step_client import STEPS_NAMESPACE, BuildSteps

from agentpool.config import Config
from agentpool.steps import workspaces

SECRET = "tok-0123456789abcdef"
# A file in the build's working directory, one under a relative workingDir, one in TMPDIR.
WRITE = f'echo {SECRET} >leftover.txt && echo cache >"$TMPDIR/tmp-leftover"'
READ_BACK = 'cat leftover.txt src/made-here "$TMPDIR/tmp-leftover"'
LOOK = 'ls -A; ls -A "$TMPDIR"; cat leftover.txt 2>/dev/null || echo no leftover'


async def _two_builds(
    buildsteps: BuildSteps, **pool: Any
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """team-a writes files in three steps (the last after its session closed), then team-b
    looks around on the same agent."""
    await buildsteps.pool("p", maxAgents=1, sessions={"linger": "0s"}, **pool)
    await buildsteps.create("a0", WRITE, build="team-a", order=0)
    await buildsteps.create("a1", "echo src >made-here", build="team-a", order=1, workingDir="src")
    first = await buildsteps.wait_final("a0", "a1")
    # After an idle moment (linger 0s): a new session into the same agent, same workspace.
    await buildsteps.create("a2", READ_BACK, build="team-a", order=2)
    first |= await buildsteps.wait_final("a2")
    await buildsteps.create("b0", LOOK, build="team-b")
    second = (await buildsteps.wait_final("b0"))["b0"]
    assert {s["phase"] for s in first.values()} == {"Succeeded"}, first
    assert second["agent"] == first["a0"]["agent"]  # the same agent, reused
    return first, second


async def test_a_build_finds_its_files_again_and_the_next_build_finds_none(
    start_operator: object, operator_config: Config, buildsteps: BuildSteps, tmp_path: Path
) -> None:
    state = tmp_path / "agent-state"
    await start_operator(dataclasses.replace(operator_config, agent_state_dir=str(state)))  # type: ignore[operator]

    first, second = await _two_builds(buildsteps)

    assert first["a2"]["logTail"] == f"{SECRET}\nsrc\ncache\n"
    assert (second["phase"], second["logTail"]) == ("Succeeded", "no leftover\n")
    agent = workspaces.for_agent(second["agent"])
    kept = sorted(p.name for p in (state / ".ws" / agent).iterdir())
    assert kept == [workspaces.for_build(STEPS_NAMESPACE, "team-b")]
    left = [p for p in state.rglob("*") if p.is_file()]
    assert not [p for p in left if SECRET.encode() in p.read_bytes()]


async def test_shared_workspaces_let_a_build_see_what_the_last_one_left(
    start_operator: object, operator_config: Config, buildsteps: BuildSteps, tmp_path: Path
) -> None:
    state = tmp_path / "agent-state"
    await start_operator(dataclasses.replace(operator_config, agent_state_dir=str(state)))  # type: ignore[operator]

    first, second = await _two_builds(buildsteps, workspace={"isolation": "Shared"})

    assert first["a2"]["logTail"].startswith(f"{SECRET}\nsrc\n")
    assert second["phase"] == "Succeeded"
    assert second["logTail"].endswith(f"{SECRET}\n")  # team-a's file, read by team-b
    assert not (state / ".ws").exists()


async def test_a_restarted_operator_removes_an_earlier_builds_output_before_the_next_build(
    start_operator: Any, operator_config: Config, buildsteps: BuildSteps, tmp_path: Path
) -> None:
    state = tmp_path / "agent-state"
    config = dataclasses.replace(operator_config, agent_state_dir=str(state))
    first = await start_operator(config)
    # The build holds its agent (and its files) for long: the operator stops before that ends.
    await buildsteps.pool("p", maxAgents=1, sessions={"linger": "10m"})
    await buildsteps.create("a0", f"echo {SECRET}", build="team-a")
    agent = (await buildsteps.wait_final("a0"))["a0"]["agent"]
    await first.stop()
    left_by_a = [p for p in state.rglob("out") if SECRET.encode() in p.read_bytes()]

    await start_operator(config)
    await buildsteps.create("b0", "echo b", build="team-b")
    b0 = (await buildsteps.wait_final("b0"))["b0"]

    assert left_by_a  # what the stopped operator left on the agent
    assert (b0["phase"], b0["agent"]) == ("Succeeded", agent)
    assert not [p for p in state.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
