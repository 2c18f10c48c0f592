"""Sessions through the real exec path: sandbox API server, WebSocket exec client, local pod."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agentpool.kube.client import load_configuration, new_exec_client
from agentpool.kube.exec import ExecApiClient, open_exec
from agentpool.steps.protocol import BOOTSTRAP_COMMAND, StepRequest
from agentpool.steps.session import Session, SessionLost
from agentpool_sandbox import profiles
from agentpool_sandbox.cluster import Sandbox


@pytest.fixture
async def sandbox(tmp_path: Path) -> AsyncIterator[Sandbox]:
    async with Sandbox(state_dir=tmp_path / "state") as sb:
        sb.store.create(
            "pods",
            "default",
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": "agent",
                    "annotations": {profiles.PROFILE_ANNOTATION: "standard"},
                },
                "spec": {"containers": [{"name": "main", "image": "alpine"}]},
            },
        )

        async def running() -> None:
            async for _, obj in sb.store.subscribe("pods", "default"):
                if obj["status"].get("phase") == "Running":
                    return

        await asyncio.wait_for(running(), 20)
        yield sb


@pytest.fixture
async def exec_api(sandbox: Sandbox) -> AsyncIterator[ExecApiClient]:
    api = new_exec_client(await load_configuration(str(sandbox.kubeconfig_path)))
    yield api
    await api.close()


async def open_session(api: ExecApiClient) -> Session:
    stream = await open_exec(api, "default", "agent", "main", BOOTSTRAP_COMMAND, timeout=60)
    return await Session.start(stream)


async def sandbox_json(sandbox: Sandbox, method: str, path: str, body: Any = None) -> Any:
    async with (
        aiohttp.ClientSession(sandbox.url) as http,
        http.request(method, path, json=body) as response,
    ):
        return await response.json() if response.content_type == "application/json" else None


async def test_twenty_steps_cost_one_exec_session(
    sandbox: Sandbox, exec_api: ExecApiClient
) -> None:
    await sandbox_json(sandbox, "POST", "/sandbox/v1/stats/reset")
    session = await open_session(exec_api)

    handles = [
        await session.submit(StepRequest(f"s{i}", f"echo {i}; exit {i % 2}".encode()))
        for i in range(20)
    ]
    results = [await h.wait() for h in handles]
    async with asyncio.timeout(20):
        await session.close()

    assert [r.exit_code for r in results] == [i % 2 for i in range(20)]
    assert [h.tail for h in handles] == [f"{i}\n".encode() for i in range(20)]
    stats = await sandbox_json(sandbox, "GET", "/sandbox/v1/stats")
    assert stats["exec"]["opened"] == 1


async def test_session_dropped_by_fault_is_resumed_with_full_output_run_once(
    sandbox: Sandbox, exec_api: ExecApiClient
) -> None:
    home = sandbox.state_dir / "pods" / "default" / "agent" / "main"
    gate, runs = home / "gate", home / "runs"
    script = (
        f"echo run >> {runs}; echo before\n"
        f"while [ ! -e {gate} ]; do sleep 0.01; done\n"
        "echo after; exit 9\n"
    )
    await sandbox_json(sandbox, "PUT", "/sandbox/v1/faults", {"dropExecAfterSeconds": 1})
    first = await open_session(exec_api)
    handle = await first.submit(StepRequest("dropped", script.encode()))

    with pytest.raises(SessionLost):
        async with asyncio.timeout(20):
            await handle.wait()
    await sandbox_json(sandbox, "DELETE", "/sandbox/v1/faults")
    gate.touch()
    second = await open_session(exec_api)
    resumed = await second.resume("dropped", 0)
    result = await resumed.wait()
    await first.abort()
    async with asyncio.timeout(20):
        await second.close()

    assert (result.exit_code, resumed.tail) == (9, b"before\nafter\n")
    assert runs.read_text() == "run\n"
