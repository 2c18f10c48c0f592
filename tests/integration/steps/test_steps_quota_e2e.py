"""The per-pool API quota under contention, measured by the sandbox, through the operator."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from step_client import STEPS_NAMESPACE, BuildSteps

from agentpool.config import Config
from agentpool.kube.client import USER_AGENT
from agentpool_sandbox.testing import eventually

POOL = f"{STEPS_NAMESPACE}/p"


@pytest.fixture
def sandbox_time_scale() -> float:
    return 0.1


async def test_many_builds_share_two_connections_and_all_succeed(
    operator: Any, buildsteps: BuildSteps
) -> None:
    await buildsteps.pool("p", minIdle=4, maxAgents=4, apiConnections={"max": 2})
    await buildsteps.wait_agents("p", 4)
    names = [f"b{b}-s{s}" for b in range(8) for s in range(3)]

    await asyncio.gather(
        *(buildsteps.create(n, f"echo {n}", build=n.split("-")[0], order=int(n[-1])) for n in names)
    )
    statuses = await buildsteps.wait_final(*names, within=60)
    stats = await buildsteps.stats()

    assert {s["phase"] for s in statuses.values()} == {"Succeeded"}
    assert all(statuses[n]["logTail"] == f"{n}\n" for n in names)
    operator_peak = stats["connections"]["byPool"][POOL]["byClient"][USER_AGENT]["peak"]
    assert 1 <= operator_peak <= 2


async def test_a_step_that_cannot_get_a_connection_fails_saying_what_to_raise(
    start_operator: Callable[[Config], Awaitable[Any]],
    operator_config: Config,
    buildsteps: BuildSteps,
) -> None:
    # Without batching a session holds its slot for the whole step, as the Jenkins plugin does.
    await start_operator(dataclasses.replace(operator_config, batching=False))
    spec = {"minIdle": 2, "maxAgents": 2, "apiConnections": {"max": 1, "queueTimeout": "1s"}}
    await buildsteps.pool("p", **spec)
    await buildsteps.wait_agents("p", 2)
    await buildsteps.create("holder", 'touch "$HOME/holding"; sleep 4', build="a")
    # Its Running status cannot be written while it holds the only slot: look in the agents.
    agents = buildsteps.home("*").parent.parent
    await eventually(lambda: _any(agents.glob("*/main/holding")), 20, "the holder to start")

    await buildsteps.create("starved", "echo never", build="b", retries=0)
    starved = (await buildsteps.wait_final("starved", within=40))["starved"]
    holder = (await buildsteps.wait_final("holder", within=40))["holder"]

    assert (starved["phase"], starved["reason"]) == ("Failed", "ApiQuotaTimeout")
    message = starved["message"]
    assert "limit 1, 1 running" in message
    assert "spec.apiConnections.max" in message
    assert holder["phase"] == "Succeeded"


async def _any(paths: Iterator[object]) -> bool:
    return any(True for _ in paths)
