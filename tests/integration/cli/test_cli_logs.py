"""`agentpool logs STEP` as a real process: the step's whole output, not just its logTail."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from cli_cluster import agentpool, create, phase, pool_body, step_body
from kubernetes_asyncio.client import ApiClient

from agentpool.config import Config
from agentpool.kube import client as kube
from agentpool_sandbox.cluster import Sandbox

TAIL_BYTES = 256
STEP = "long-output"
LINES = 200
# Far longer than the tail, so the tail alone cannot pass for the whole output.
SCRIPT = f'i=1; while [ $i -le {LINES} ]; do echo "line $i of the build"; i=$((i+1)); done'
EXPECTED = "".join(f"line {i} of the build\n" for i in range(1, LINES + 1))
# The shared fixtures' types (tests/integration/conftest.py), which tests do not import.
StartOperator = Callable[..., Awaitable[Any]]
Until = Callable[..., Awaitable[Any]]


@pytest.fixture
def sandbox_time_scale() -> float:
    return 0.2


@pytest.fixture
def operator_config(operator_config: Config) -> Config:
    return dataclasses.replace(operator_config, log_tail_bytes=TAIL_BYTES)


async def run_long_step(api: ApiClient, until: Until, env: list[dict[str, str]]) -> None:
    """A pool whose agent container has `env`, and a step printing far more than the tail.
    The build keeps its session (and so its files on the agent) for the whole test: a build
    that has moved on leaves only the status's tail, with a note (as in the state dir test)."""
    pool = pool_body("logs-pool", minIdle=1, sessions={"linger": "10m"})
    (container,) = pool["spec"]["template"]["spec"]["containers"]
    container["env"] = env
    await create(api, pool)
    await create(api, step_body(STEP, "logs-pool", SCRIPT, build="logs"))

    async def finished() -> str | None:
        found = await phase(api, STEP)
        return found if found in ("Succeeded", "Failed") else None

    assert await until(finished, 30.0, "the step to finish") == "Succeeded"


async def test_logs_prints_the_whole_output_of_a_step(
    operator: Any, kube_api: ApiClient, cluster: Sandbox, until: Until
) -> None:
    await run_long_step(kube_api, until, [])

    done = await agentpool("logs", STEP, "--kubeconfig", str(cluster.kubeconfig_path))

    assert done.code == 0, done.err
    assert done.out == EXPECTED
    body = await kube.get_object(kube_api, kube.BUILDSTEPS, "default", STEP)
    tail = body["status"]["logTail"]
    assert len(tail.encode()) <= TAIL_BYTES
    assert EXPECTED.endswith(tail)


async def test_logs_reads_the_operators_agent_state_dir_when_told(
    *,
    operator_config: Config,
    start_operator: StartOperator,
    kube_api: ApiClient,
    cluster: Sandbox,
    until: Until,
    tmp_path: Path,
) -> None:
    state_dir = str(tmp_path / "operator-state")
    await start_operator(dataclasses.replace(operator_config, agent_state_dir=state_dir))
    await run_long_step(kube_api, until, [])
    kubeconfig = str(cluster.kubeconfig_path)

    told = await agentpool("logs", STEP, "--kubeconfig", kubeconfig, "--agent-state-dir", state_dir)
    untold = await agentpool("logs", STEP, "--kubeconfig", kubeconfig)

    assert told.code == 0, told.err
    assert told.out == EXPECTED
    # Not found under the default state dir: the status's tail, with a note saying what to give.
    body = await kube.get_object(kube_api, kube.BUILDSTEPS, "default", STEP)
    assert untold.code == 0
    assert untold.out == body["status"]["logTail"]
    assert "the output is no longer on agent" in untold.err
    assert "--agent-state-dir" in untold.err


async def test_logs_follows_the_containers_own_state_dir(
    operator: Any, kube_api: ApiClient, cluster: Sandbox, until: Until, tmp_path: Path
) -> None:
    # The container's AGENTPOOL_STATE_DIR wins for the session and for `agentpool logs` alike.
    state = [{"name": "AGENTPOOL_STATE_DIR", "value": str(tmp_path / "container-state")}]
    await run_long_step(kube_api, until, state)

    done = await agentpool("logs", STEP, "--kubeconfig", str(cluster.kubeconfig_path))

    assert done.code == 0, done.err
    assert done.out == EXPECTED


async def test_logs_of_an_unknown_step_fails_clearly(cluster: Sandbox) -> None:
    done = await agentpool("logs", "no-such-step", "--kubeconfig", str(cluster.kubeconfig_path))

    assert done.code != 0
    assert done.out == ""
    assert "BuildStep default/no-such-step not found" in done.err
