"""Batching through the operator: a build's steps share one exec session, counted by the sandbox."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from step_client import STEPS_NAMESPACE, BuildSteps

from agentpool.config import Config

POOL = f"{STEPS_NAMESPACE}/p"


@pytest.fixture
def sandbox_time_scale() -> float:
    return 0.1


@pytest.fixture
def operator_config(operator_config: Config) -> Config:
    # The build keeps its agent long enough for a step created after the batch to join it.
    return dataclasses.replace(operator_config, build_grace=5.0)


async def test_twenty_steps_and_a_late_one_share_one_exec_session(
    operator: object, buildsteps: BuildSteps
) -> None:
    await buildsteps.pool("p", sessions={"linger": "5s"})
    await buildsteps.wait_agents("p", 1)
    names = [f"s{i:02d}" for i in range(20)]
    for i, name in enumerate(names):
        await buildsteps.create(
            name, f'echo {i} >>"$HOME/order"; echo step {i}', build="b", order=i
        )
    statuses = await buildsteps.wait_final(*names)
    await buildsteps.create("late", 'echo late >>"$HOME/order"', build="b", order=99)
    late = (await buildsteps.wait_final("late"))["late"]
    stats = await buildsteps.stats()
    order = (buildsteps.home(late["agent"]) / "order").read_text().split()

    assert {s["phase"] for s in statuses.values()} == {"Succeeded"}
    assert statuses["s07"]["logTail"] == "step 7\n"
    assert order == [str(i) for i in range(20)] + ["late"]
    assert {s["session"] for s in statuses.values()} == {late["session"]}
    assert stats["exec"]["byPool"][POOL]["opened"] == 1


async def test_without_batching_each_step_opens_its_own_session(
    start_operator: Callable[[Config], Awaitable[Any]],
    operator_config: Config,
    buildsteps: BuildSteps,
) -> None:
    await start_operator(dataclasses.replace(operator_config, batching=False))
    await buildsteps.pool("p")
    await buildsteps.wait_agents("p", 1)
    for i in range(3):
        await buildsteps.create(f"s{i}", f"echo {i}", build="b", order=i)
    statuses = await buildsteps.wait_final("s0", "s1", "s2")
    stats = await buildsteps.stats()

    assert {s["phase"] for s in statuses.values()} == {"Succeeded"}
    assert len({s["session"] for s in statuses.values()}) == 3
    assert stats["exec"]["byPool"][POOL]["opened"] == 3
