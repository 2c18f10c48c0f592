"""The kube layer against the sandbox cluster: pods, custom objects, exec, and the quota."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from kubernetes_asyncio.client import ApiextensionsV1Api, CoreV1Api, CustomObjectsApi

from agentpool import USER_AGENT
from agentpool.kube import client as kube
from agentpool.kube.exec import (
    V5,
    ExecConnectError,
    ExecDropped,
    ExecSession,
    open_exec,
)
from agentpool.kube.quota import ApiQuota
from agentpool_sandbox.cluster import Sandbox

NS = "default"
POOL = "demo"
CRDS = Path(__file__).parents[3] / "crds"


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox(time_scale=0.0) as cluster:
        yield cluster


@pytest.fixture
async def clients(sandbox: Sandbox) -> AsyncIterator[kube.KubeClients]:
    connected = await kube.connect(str(sandbox.kubeconfig_path))
    yield connected
    await connected.close()


async def sandbox_json(sandbox: Sandbox, path: str, put: dict[str, Any] | None = None) -> Any:
    async with aiohttp.ClientSession() as http:
        if put is not None:
            async with http.put(sandbox.url + path, json=put) as response:
                response.raise_for_status()
        async with http.get(sandbox.url + path) as response:
            return await response.json()


def agent_manifest(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"agentpool.dev/pool": POOL}},
        "spec": {"containers": [{"name": "agent", "image": "busybox:1.36"}]},
    }


async def running_agent(api: Any, name: str) -> dict[str, Any]:
    """Create an agent pod and wait (bounded) until the kubelet reports it Running."""
    await kube.create_pod(api, NS, agent_manifest(name))
    core = CoreV1Api(api)
    async with asyncio.timeout(10):
        while True:
            pod = kube._as_dict(api, await core.read_namespaced_pod(name, NS))
            if pod.get("status", {}).get("phase") == "Running":
                return pod
            await asyncio.sleep(0.02)


async def collect(session: ExecSession) -> dict[int, bytes]:
    out = {1: b"", 2: b""}
    while (chunk := await session.read()) is not None:
        out[chunk[0]] += chunk[1]
    return out


async def test_script_over_stdin_gives_output_and_exit_code(clients: kube.KubeClients) -> None:
    await running_agent(clients.api, "agent-1")
    script = b"echo to-out; echo to-err >&2; exit 7\n"
    async with await open_exec(clients.exec, NS, "agent-1", "agent", ["sh"]) as session:
        await session.write(script)
        await session.close_stdin()
        out = await collect(session)
        result = await session.result()
    assert session.protocol == V5
    assert (out[1], out[2], result.exit_code) == (b"to-out\n", b"to-err\n", 7)


async def test_large_binary_round_trip(clients: kube.KubeClients) -> None:
    await running_agent(clients.api, "agent-1")
    data = bytes(range(256)) * 8_000  # 2 MB including every byte value
    async with await open_exec(clients.exec, NS, "agent-1", "agent", ["cat"]) as session:

        async def send() -> None:
            await session.write(data)
            await session.close_stdin()

        sending = asyncio.create_task(send())
        out = await collect(session)
        await sending
        assert (await session.result()).exit_code == 0
    assert out[1] == data


async def test_exec_into_missing_pod_is_refused_with_the_servers_reason(
    clients: kube.KubeClients,
) -> None:
    with pytest.raises(ExecConnectError) as caught:
        await open_exec(clients.exec, NS, "no-such-pod", "agent", ["true"])
    assert caught.value.status == 404
    assert "no-such-pod" in caught.value.body_message


async def test_injected_drop_ends_session_without_status(
    sandbox: Sandbox, clients: kube.KubeClients
) -> None:
    await running_agent(clients.api, "agent-1")
    await sandbox_json(sandbox, "/sandbox/v1/faults", put={"dropExecAfterSeconds": 0.3})
    command = ["sh", "-c", "echo started; sleep 10"]
    async with await open_exec(clients.exec, NS, "agent-1", "agent", command) as session:
        out = await collect(session)
        with pytest.raises(ExecDropped):
            await session.result()
    assert out[1] == b"started\n"


async def test_injected_error_on_upgrade_is_a_connect_error(
    sandbox: Sandbox, clients: kube.KubeClients
) -> None:
    await running_agent(clients.api, "agent-1")
    faults = {"errors": [{"code": 503, "rate": 1, "verbs": ["exec"], "retryAfterSeconds": 2}]}
    await sandbox_json(sandbox, "/sandbox/v1/faults", put=faults)
    with pytest.raises(ExecConnectError) as caught:
        await open_exec(clients.exec, NS, "agent-1", "agent", ["true"])
    assert caught.value.status == 503
    assert caught.value.retry_after == 2.0  # the server's Retry-After, kept for the back-off


async def test_quota_caps_the_pools_concurrent_connections(
    sandbox: Sandbox, clients: kube.KubeClients
) -> None:
    await running_agent(clients.api, "agent-1")
    quota = ApiQuota(f"{NS}/{POOL}", 2)

    async def step(i: int) -> int:
        async with quota.slot("exec", f"{NS}/agent-1/agent"):
            command = ["sh", "-c", f"sleep 0.1; exit {i % 3}"]
            async with await open_exec(
                clients.exec, NS, "agent-1", "agent", command, stdin=False
            ) as session:
                return (await session.result()).exit_code

    codes = await asyncio.gather(*(step(i) for i in range(8)))
    stats = await sandbox_json(sandbox, "/sandbox/v1/stats")
    assert codes == [i % 3 for i in range(8)]
    assert stats["exec"]["byPool"][f"{NS}/{POOL}"]["peak"] <= 2
    assert stats["exec"]["byPool"][f"{NS}/{POOL}"]["opened"] == 8


async def test_requests_carry_the_operators_user_agent(
    sandbox: Sandbox, clients: kube.KubeClients
) -> None:
    await running_agent(clients.api, "agent-1")
    async with await open_exec(clients.exec, NS, "agent-1", "agent", ["true"]) as session:
        await session.result()
    stats = await sandbox_json(sandbox, "/sandbox/v1/stats")
    assert set(stats["requests"]["byClient"]) == {USER_AGENT}
    assert stats["exec"]["byClient"][USER_AGENT]["opened"] == 1


async def test_pods_listed_by_label_and_deleted(clients: kube.KubeClients) -> None:
    await kube.create_pod(clients.api, NS, agent_manifest("agent-1"))
    other = agent_manifest("other")
    other["metadata"]["labels"] = {"agentpool.dev/pool": "elsewhere"}
    await kube.create_pod(clients.api, NS, other)
    pods = await kube.list_pods(clients.api, NS, f"agentpool.dev/pool={POOL}")
    assert [pod["metadata"]["name"] for pod in pods] == ["agent-1"]
    assert await kube.delete_pod(clients.api, NS, "agent-1", grace_period_seconds=0)
    assert not await kube.delete_pod(clients.api, NS, "never-existed")


async def install_crds(api: Any) -> None:
    extensions = ApiextensionsV1Api(api)
    for path in sorted(CRDS.glob("*.yaml")):
        await extensions.create_custom_resource_definition(yaml.safe_load(path.read_text()))


async def test_custom_objects_get_list_and_merge_patch_status(clients: kube.KubeClients) -> None:
    await install_crds(clients.api)
    step = {
        "apiVersion": f"{kube.GROUP}/{kube.VERSION}",
        "kind": "BuildStep",
        "metadata": {"name": "hello-1", "labels": {"agentpool.dev/build": "hello"}},
        "spec": {"pool": POOL, "build": "hello", "script": "echo hi\n"},
    }
    await CustomObjectsApi(clients.api).create_namespaced_custom_object(
        kube.GROUP, kube.VERSION, NS, kube.BUILDSTEPS, step
    )
    await kube.patch_status(
        clients.api, kube.BUILDSTEPS, NS, "hello-1", {"phase": "Running", "attempts": 1}
    )
    await kube.patch_status(clients.api, kube.BUILDSTEPS, NS, "hello-1", {"phase": "Succeeded"})
    got = await kube.get_object(clients.api, kube.BUILDSTEPS, NS, "hello-1")
    listed = await kube.list_objects(
        clients.api, kube.BUILDSTEPS, NS, label_selector="agentpool.dev/build=hello"
    )
    assert (got["status"]["phase"], got["status"]["attempts"]) == ("Succeeded", 1)
    assert got["spec"]["script"] == "echo hi\n"
    assert [item["metadata"]["name"] for item in listed] == ["hello-1"]
