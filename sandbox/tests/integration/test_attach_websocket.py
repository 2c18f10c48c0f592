"""pods/attach: the main process's output from the moment of attaching, then a Success status."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from agentpool_sandbox.cluster import Sandbox

PODS = "/api/v1/namespaces/default/pods"


@pytest.fixture
async def sandbox(tmp_path: Path) -> AsyncIterator[Sandbox]:
    async with Sandbox(state_dir=tmp_path / "state", time_scale=0.2) as sb:
        yield sb


async def running(http: aiohttp.ClientSession, name: str, script: str, policy: str) -> None:
    body = {
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": policy,
            "containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", script]}],
        },
    }
    async with http.post(PODS, json=body) as response:
        assert response.status == 201
    for _ in range(250):
        async with http.get(f"{PODS}/{name}") as response:
            pod = await response.json()
        if pod.get("status", {}).get("phase") == "Running":
            return
        await asyncio.sleep(0.02)
    pytest.fail(f"pod {name} never ran")


async def test_attach_relays_new_output_then_success(sandbox: Sandbox) -> None:
    async with aiohttp.ClientSession(sandbox.url) as http:
        script = "echo before; sleep 0.5; echo after; sleep 0.3"
        await running(http, "talker", script, "Never")
        frames: list[bytes] = []
        async with http.ws_connect(
            f"{PODS}/talker/attach?stdout=true&stderr=true&stdin=true",
            protocols=("v5.channel.k8s.io",),
        ) as ws:
            async for message in ws:
                frames.append(bytes(message.data))

    output = b"".join(f[1:] for f in frames if f[0] == 1)
    assert output == b"after\n"
    assert json.loads(frames[-1][1:]) == {"metadata": {}, "status": "Success"}
    assert frames[-1][0] == 3


async def test_attach_to_a_completed_pod_is_a_bad_request(sandbox: Sandbox) -> None:
    async with aiohttp.ClientSession(sandbox.url) as http:
        await running(http, "done", "sleep 0.2", "Never")
        for _ in range(250):
            async with http.get(f"{PODS}/done") as response:
                if (await response.json())["status"]["phase"] == "Succeeded":
                    break
            await asyncio.sleep(0.02)
        async with http.get(f"{PODS}/done/attach?stdout=true") as response:
            body = await response.json()

    assert response.status == 400
    assert body["message"] == (
        "cannot attach to a container in a completed pod; current phase is Succeeded"
    )
