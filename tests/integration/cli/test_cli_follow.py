"""`agentpool logs -f STEP` as a real process against the real operator on the sandbox.

Lines arrive while the step runs (the step waits on a file the test creates only after it
saw the first line), a pending step is waited for, and once the agent is gone the step's
status.logTail is printed with a note instead of a traceback.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cli_cluster import (
    NS,
    agentpool,
    create,
    finish,
    phase,
    pool_body,
    read_until,
    start,
    step_body,
)
from kubernetes_asyncio.client import ApiClient, CustomObjectsApi

from agentpool.cli import CLI_USER_AGENT
from agentpool.config import Config
from agentpool.kube import client as kube
from agentpool_sandbox.cluster import Sandbox

Until = Callable[..., Awaitable[Any]]
TAIL_BYTES = 64


@pytest.fixture
def sandbox_time_scale() -> float:
    return 0.2


@pytest.fixture
def operator_config(operator_config: Config) -> Config:
    return dataclasses.replace(operator_config, log_tail_bytes=TAIL_BYTES)


def gated_script(gate: Path) -> str:
    """Prints a line, waits until `gate` exists, prints another."""
    return (
        'echo "first line"\n'
        f'while [ ! -e "{gate}" ]; do sleep 0.05; done\n'
        'echo "second line"; echo "to stderr" >&2\n'
    )


async def final(api: ApiClient, until: Until, step: str) -> str:
    async def done() -> str | None:
        found = await phase(api, step)
        return found if found in ("Succeeded", "Failed", "Skipped", "Cancelled") else None

    result: str = await until(done, 30.0, f"{step} to be final")
    return result


async def test_follow_prints_lines_while_the_step_runs(
    operator: Any, kube_api: ApiClient, cluster: Sandbox, until: Until, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    await create(kube_api, pool_body("follow-pool", minIdle=1))
    await create(kube_api, step_body("gated", "follow-pool", gated_script(gate)))

    process = await start("logs", "-f", "gated", "--kubeconfig", str(cluster.kubeconfig_path))
    try:
        first = await read_until(process.stdout, "first line", 30.0)
        running_when_seen = await phase(kube_api, "gated")
        still_following = process.returncode is None
    finally:
        gate.touch()
    done = await finish(process)

    assert first == "first line\n"
    assert running_when_seen == "Running"
    assert still_following
    assert done.code == 0, done.err
    assert done.out == "second line\nto stderr\n"
    agent = (await kube.get_object(kube_api, kube.BUILDSTEPS, NS, "gated"))["status"]["agent"]
    assert done.err.strip().endswith(f"step gated Succeeded (exit 0) on agent {agent}")


async def test_follow_waits_for_a_pending_step_then_streams_it(
    operator: Any, kube_api: ApiClient, cluster: Sandbox, until: Until, tmp_path: Path
) -> None:
    # The pool does not exist yet: the step stays Pending (PoolNotFound) until it does.
    await create(kube_api, step_body("early", "late-pool", "echo built; exit 3"))

    process = await start("logs", "-f", "early", "--kubeconfig", str(cluster.kubeconfig_path))
    waited = await read_until(process.stderr, "waiting", 30.0)
    assert process.returncode is None
    await create(kube_api, pool_body("late-pool", minIdle=1))
    done = await finish(process)

    assert "PoolNotFound" in waited
    assert done.code == 0, done.err
    assert done.out == "built\n"
    assert "step early Failed (exit 3)" in done.err
    assert "ScriptFailed" in done.err


async def delete_pool_and_agents(api: ApiClient, until: Until, pool: str) -> None:
    await CustomObjectsApi(api).delete_namespaced_custom_object(
        kube.GROUP, kube.VERSION, NS, kube.AGENTPOOLS, pool
    )

    async def agents_gone() -> bool:
        return not await kube.list_pods(api, NS, f"agentpool.dev/pool={pool}")

    await until(agents_gone, 30.0, f"the agents of {pool} to be deleted")


async def test_logs_after_the_agent_is_gone_prints_the_status_tail(
    operator: Any, kube_api: ApiClient, cluster: Sandbox, until: Until
) -> None:
    script = 'i=1; while [ $i -le 40 ]; do echo "line $i"; i=$((i+1)); done'
    whole = "".join(f"line {i}\n" for i in range(1, 41)).encode()
    await create(kube_api, pool_body("gone-pool", minIdle=1))
    await create(kube_api, step_body("orphan", "gone-pool", script))
    assert await final(kube_api, until, "orphan") == "Succeeded"
    body = await kube.get_object(kube_api, kube.BUILDSTEPS, NS, "orphan")
    agent = body["status"]["agent"]
    await delete_pool_and_agents(kube_api, until, "gone-pool")
    kubeconfig = str(cluster.kubeconfig_path)

    plain = await agentpool("logs", "orphan", "--kubeconfig", kubeconfig)
    followed = await agentpool("logs", "-f", "orphan", "--kubeconfig", kubeconfig)

    for done in (plain, followed):
        assert done.code == 0, done.err
        assert done.out == body["status"]["logTail"]
        assert whole.endswith(done.out.encode())
        assert f"agent {agent} is gone: printed the last {TAIL_BYTES} of {len(whole)} bytes" in (
            done.err
        )
        assert "Traceback" not in done.err
    assert followed.err.strip().endswith(f"step orphan Succeeded (exit 0) on agent {agent}")


async def test_logs_tail_shows_the_last_lines(
    operator: Any, kube_api: ApiClient, cluster: Sandbox, until: Until
) -> None:
    await create(kube_api, pool_body("tail-pool", minIdle=1))
    await create(kube_api, step_body("counted", "tail-pool", "seq 1 30"))
    assert await final(kube_api, until, "counted") == "Succeeded"
    kubeconfig = str(cluster.kubeconfig_path)

    plain = await agentpool("logs", "counted", "--tail", "3", "--kubeconfig", kubeconfig)
    followed = await agentpool("logs", "-f", "counted", "--tail=2", "--kubeconfig", kubeconfig)

    assert (plain.code, plain.out) == (0, "28\n29\n30\n")
    assert (followed.code, followed.out) == (0, "29\n30\n")


async def test_logs_of_a_step_not_started_says_so(
    operator: Any, kube_api: ApiClient, cluster: Sandbox
) -> None:
    await create(kube_api, step_body("unplaced", "no-such-pool", "echo hi"))

    done = await agentpool("logs", "unplaced", "--kubeconfig", str(cluster.kubeconfig_path))

    assert done.code == 1
    assert done.out == ""
    assert "step unplaced has not started yet" in done.err
    assert "use -f to wait" in done.err
    assert "Traceback" not in done.err


async def test_follow_catches_a_quick_later_step_of_a_build_whole(
    operator: Any, kube_api: ApiClient, cluster: Sandbox, until: Until, tmp_path: Path
) -> None:
    # The operator removes a step's files once the build moves on, and a later step shows its
    # agent only once running: the exec waits on the build's agent before the step starts.
    gate = tmp_path / "gate"
    lines = "".join(f"line {i}\n" for i in range(1, 31))
    await create(kube_api, pool_body("quick-pool", minIdle=1))
    first = step_body("first", "quick-pool", gated_script(gate), build="b", order=1)
    quick = step_body("quick", "quick-pool", "seq -f 'line %g' 1 30", build="b", order=2)
    last = step_body("last", "quick-pool", "echo last", build="b", order=3)
    for body in (first, quick, last):
        await create(kube_api, body)

    process = await start("logs", "-f", "quick", "--kubeconfig", str(cluster.kubeconfig_path))
    try:
        # `first` runs, so the build has its agent: the follower opens its exec there and
        # waits for `quick`'s output before `quick` starts.
        await until(cli_exec_open(cluster), 30.0, "the command line's exec on the agent")
    finally:
        gate.touch()
    done = await finish(process)

    assert done.code == 0, done.err
    assert done.out == lines
    assert len(lines) > TAIL_BYTES
    assert "no longer on" not in done.err


def cli_exec_open(cluster: Sandbox) -> Callable[[], Awaitable[bool]]:
    """Whether the command line holds an exec session open (the sandbox counts by client)."""

    async def check() -> bool:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{cluster.url}/sandbox/v1/stats") as response,
        ):
            stats = await response.json()
        clients = (stats.get("exec") or {}).get("byClient") or {}
        return bool((clients.get(CLI_USER_AGENT) or {}).get("open", 0) >= 1)

    return check
