"""Nothing of one build is left on the agent for the next: its steps' files (output, exit
code) are removed once its status is written and the build is done, and env values never
stay on disk."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from step_client import BuildSteps

from agentpool.config import Config

SECRET = "tok-0123456789abcdef"


async def test_a_later_build_on_the_same_agent_finds_nothing_of_an_earlier_one(
    start_operator: object, operator_config: Config, buildsteps: BuildSteps, tmp_path: Path
) -> None:
    state = tmp_path / "agent-state"
    await start_operator(dataclasses.replace(operator_config, agent_state_dir=str(state)))  # type: ignore[operator]
    await buildsteps.pool("p", minIdle=1, maxAgents=1, sessions={"linger": "0s"})
    for i in range(3):
        await buildsteps.create(
            f"a{i}",
            f"echo team-a output {i}",
            build="team-a",
            order=i,
            env=[{"name": "DEPLOY_TOKEN", "value": SECRET}],
        )
    first = await buildsteps.wait_final("a0", "a1", "a2")
    await buildsteps.create(
        "b0", f'grep -rl "team-a out""put" {state} || echo nothing found', build="team-b"
    )
    second = (await buildsteps.wait_final("b0"))["b0"]

    assert {s["phase"] for s in first.values()} == {"Succeeded"}
    assert second["agent"] == first["a0"]["agent"]  # the same agent, reused
    assert (second["phase"], second["logTail"]) == ("Succeeded", "nothing found\n")
    left = [p for p in state.rglob("*") if p.is_file()]
    assert not [p for p in left if SECRET.encode() in p.read_bytes()]
    assert not [p for p in left if b"team-a output" in p.read_bytes()]
