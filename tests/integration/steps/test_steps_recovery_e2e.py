"""Steps survive dropped exec sessions and operator restarts: full output, run exactly once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from step_client import STEPS_NAMESPACE, BuildSteps

POOL = f"{STEPS_NAMESPACE}/p"
# Prints over about two seconds, so sessions dropped every 0.7 s cut it several times.
SLOW = (
    'echo run >>"$HOME/count-$STEP"; i=0; '
    'while [ $i -lt 5 ]; do echo "line $i"; i=$((i + 1)); sleep 0.4; done; exit 7'
)
SLOW_OUTPUT = "".join(f"line {i}\n" for i in range(5))


@pytest.fixture
def sandbox_time_scale() -> float:
    return 0.1


async def test_a_step_whose_session_drops_completes_once_with_its_whole_output(
    operator: Any, buildsteps: BuildSteps
) -> None:
    await buildsteps.pool("p")
    await buildsteps.wait_agents("p", 1)
    await buildsteps.faults({"dropExecAfterSeconds": 0.7})

    await buildsteps.create("dropped", SLOW, env=[{"name": "STEP", "value": "dropped"}])
    dropped = (await buildsteps.wait_final("dropped"))["dropped"]
    await buildsteps.faults({})
    stats = await buildsteps.stats()
    runs = (buildsteps.home(dropped["agent"]) / "count-dropped").read_text()

    assert (dropped["phase"], dropped["exitCode"], dropped["attempts"]) == ("Failed", 7, 1)
    assert (dropped["logTail"], dropped["logBytes"]) == (SLOW_OUTPUT, len(SLOW_OUTPUT))
    assert runs == "run\n"
    assert stats["exec"]["byPool"][POOL]["opened"] >= 2


async def test_an_operator_restart_mid_batch_loses_no_step_and_runs_none_twice(
    start_operator: Callable[[], Awaitable[Any]], buildsteps: BuildSteps
) -> None:
    first = await start_operator()
    await buildsteps.pool("p")
    await buildsteps.wait_agents("p", 1)
    names = [f"s{i}" for i in range(6)]
    for i, name in enumerate(names):
        script = f'echo run >>"$HOME/count-{name}"; sleep 0.4; echo "{name} done"'
        await buildsteps.create(name, script, build="b", order=i)
    await buildsteps.wait_final("s1")

    await first.stop()
    left = [n for n in names if (await buildsteps.status(n)).get("phase") != "Succeeded"]
    await start_operator()
    statuses = await buildsteps.wait_final(*names, within=60)
    agents = buildsteps.home("*").parent.parent
    runs = {n: "".join(f.read_text() for f in agents.glob(f"*/main/count-{n}")) for n in names}

    assert left, "the first operator finished the whole batch: nothing was interrupted"
    assert {s["phase"] for s in statuses.values()} == {"Succeeded"}
    assert len({s["agent"] for s in statuses.values()}) == 1  # the build kept its agent
    assert all(statuses[n]["logTail"] == f"{n} done\n" for n in names)
    assert runs == dict.fromkeys(names, "run\n")
