"""/sandbox/v1/stats and /sandbox/v1/faults: counts, peaks per pool, injected failures."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from agentpool_sandbox.cluster import Sandbox

ROOT = Path(__file__).resolve().parents[3]
PODS = "/api/v1/namespaces/default/pods"
STEPS = "/apis/agentpool.dev/v1alpha1/namespaces/default/buildsteps"
V5 = "v5.channel.k8s.io"
WAIT = 10.0
OPERATOR = "agentpool-operator/0.1.0"


@pytest.fixture
async def sandbox(tmp_path: Path) -> AsyncIterator[Sandbox]:
    async with Sandbox(state_dir=tmp_path / "state") as sb:
        yield sb


@pytest.fixture
async def http(sandbox: Sandbox) -> AsyncIterator[aiohttp.ClientSession]:
    headers = {"User-Agent": OPERATOR}
    async with aiohttp.ClientSession(sandbox.url, headers=headers) as session:
        yield session


def agent(name: str, pool: str = "linux") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"agentpool.dev/pool": pool}},
        "spec": {"containers": [{"name": "main", "image": "alpine"}]},
    }


async def stats(http: aiohttp.ClientSession) -> dict[str, Any]:
    async with http.get("/sandbox/v1/stats") as response:
        return dict(await response.json())


async def put_faults(http: aiohttp.ClientSession, doc: object) -> tuple[int, dict[str, Any]]:
    async with http.put("/sandbox/v1/faults", json=doc) as response:
        return response.status, dict(await response.json())


async def running(sandbox: Sandbox, name: str) -> None:
    async def wait() -> None:
        async for _, obj in sandbox.store.subscribe("pods", "default"):
            if obj["metadata"]["name"] == name and obj["status"].get("phase") == "Running":
                return

    await asyncio.wait_for(wait(), WAIT)


def exec_url(pod: str, *command: str, stdin: bool = False) -> str:
    query = "&".join(f"command={part}" for part in command)
    return f"{PODS}/{pod}/exec?{query}&stdout=true&stderr=true&stdin={str(stdin).lower()}"


async def test_requests_are_counted_by_verb_resource_and_client(
    sandbox: Sandbox, http: aiohttp.ClientSession
) -> None:
    async with http.post(PODS, json=agent("a1")) as response:
        assert response.status == 201
    async with http.get(f"{PODS}/a1"), http.get(PODS), http.get("/version"):
        pass
    kubectl = {"User-Agent": "kubectl/v1.37.1"}
    async with aiohttp.ClientSession(sandbox.url, headers=kubectl) as k, k.get(PODS):
        pass

    counted = (await stats(http))["requests"]

    assert counted["byResource"]["pods"] == {"create": 1, "get": 1, "list": 2}
    assert counted["byClient"][OPERATOR]["byVerb"] == {"create": 1, "get": 2, "list": 1}
    assert counted["byClient"]["kubectl/v1.37.1"]["total"] == 1
    assert counted["byResource"]["nonResource"] == {"get": 1}


async def test_exec_sessions_and_peak_connections_per_pool(
    sandbox: Sandbox, http: aiohttp.ClientSession
) -> None:
    for name in ("a1", "a2", "a3"):
        sandbox.store.create("pods", "default", agent(name))
        await running(sandbox, name)
    sockets = [
        await http.ws_connect(exec_url(name, "cat", stdin=True), protocols=(V5,))
        for name in ("a1", "a2", "a3")
    ]

    during = await stats(http)
    for ws in sockets:
        await ws.send_bytes(b"\xff\x00")
        async for _ in ws:
            pass
    after = await stats(http)

    assert during["exec"]["open"] == 3
    assert during["connections"]["byPool"]["default/linux"]["current"] == 3
    assert after["exec"]["opened"] == 3 and after["exec"]["open"] == 0
    assert after["exec"]["byPool"]["default/linux"]["peak"] == 3
    assert after["connections"]["byPool"]["default/linux"] == {
        "current": 0,
        "peak": 3,
        "byClient": {OPERATOR: {"current": 0, "peak": 3}},
    }


async def test_reset_zeroes_counters_and_restarts_peaks(
    sandbox: Sandbox, http: aiohttp.ClientSession
) -> None:
    async with http.get(PODS):
        pass

    async with http.post("/sandbox/v1/stats/reset") as response:
        assert response.status == 200
    fresh = await stats(http)

    assert fresh["requests"]["total"] == 0
    assert fresh["connections"]["peak"] == 0


async def test_watches_count_overall_but_are_listed_apart(
    sandbox: Sandbox, http: aiohttp.ClientSession
) -> None:
    async with http.get(
        PODS, params={"watch": "true", "labelSelector": "agentpool.dev/pool=linux"}
    ) as watch:
        assert watch.status == 200
        during = await stats(http)

    assert during["connections"]["watches"]["current"] == 1
    assert during["connections"]["current"] == 1
    assert during["connections"]["byPool"] == {}


async def test_injected_429_carries_retry_after(http: aiohttp.ClientSession) -> None:
    status, _ = await put_faults(
        http,
        {"errors": [{"code": 429, "rate": 1, "verbs": ["create"], "resources": ["pods"]}]},
    )
    assert status == 200

    async with http.post(PODS, json=agent("a1")) as response:
        body = await response.json()
        retry_after = response.headers.get("Retry-After")
    async with http.get(PODS) as listing:
        assert listing.status == 200

    assert (response.status, body["reason"], retry_after) == (429, "TooManyRequests", "1")
    assert (await stats(http))["responses"]["byCode"]["429"] == 1


async def test_invalid_faults_are_rejected_with_the_field(http: aiohttp.ClientSession) -> None:
    status, body = await put_faults(http, {"errors": [{"code": 418, "rate": 1}]})

    assert status == 400
    assert "errors[0].code" in body["message"]
    async with http.get("/sandbox/v1/faults") as response:
        assert (await response.json())["errors"] == []


async def test_dropped_exec_session_leaves_the_command_running(
    sandbox: Sandbox, http: aiohttp.ClientSession
) -> None:
    sandbox.store.create("pods", "default", agent("a1"))
    await running(sandbox, "a1")
    await put_faults(http, {"dropExecAfterSeconds": 0.2})
    script = (
        "echo started; while [ ! -f go ]; do sleep 0.02; done; echo after-drop; echo done > result"
    )
    frames: list[bytes] = []

    async with http.ws_connect(exec_url("a1", "sh", "-c", script), protocols=(V5,)) as ws:
        async for message in ws:
            frames.append(message.data)
    directory = sandbox.state_dir / "pods" / "default" / "a1" / "main"
    (directory / "go").touch()

    async def finished() -> None:
        # Only the file system tells that the detached command went on: poll it, bounded.
        while not (directory / "result").exists():  # noqa: ASYNC110
            await asyncio.sleep(0.02)

    await asyncio.wait_for(finished(), WAIT)
    assert frames == [b"\x01started\n"]
    assert (await stats(http))["exec"]["open"] == 0


async def test_watches_are_closed_early(http: aiohttp.ClientSession) -> None:
    await put_faults(http, {"closeWatchesAfterSeconds": 1})

    async with http.get(PODS, params={"watch": "true"}) as watch:
        remainder = await asyncio.wait_for(watch.content.read(), WAIT)

    events = [json.loads(line) for line in remainder.splitlines() if line.strip()]
    assert all(event["type"] != "ERROR" for event in events)


async def test_buildstep_requests_belong_to_the_pool_in_their_spec(
    sandbox: Sandbox, http: aiohttp.ClientSession
) -> None:
    crd = yaml.safe_load((ROOT / "crds" / "buildsteps.yaml").read_text())
    sandbox.store.create("customresourcedefinitions.apiextensions.k8s.io", None, crd)
    step = {
        "apiVersion": "agentpool.dev/v1alpha1",
        "kind": "BuildStep",
        "metadata": {"name": "compile"},
        "spec": {"pool": "windows", "script": "make"},
    }

    async with http.post(STEPS, json=step) as created:
        assert created.status == 201
    patch = {"status": {"phase": "Queued"}}
    merge = {"Content-Type": "application/merge-patch+json"}
    async with http.patch(f"{STEPS}/compile/status", json=patch, headers=merge) as patched:
        assert patched.status == 200

    pools = (await stats(http))["connections"]["byPool"]
    assert pools["default/windows"]["peak"] == 1 and pools["default/windows"]["current"] == 0


@pytest.mark.parametrize(("code", "reason"), [(500, "InternalError"), (503, "ServiceUnavailable")])
async def test_injected_errors_hit_only_their_verbs(
    http: aiohttp.ClientSession, code: int, reason: str
) -> None:
    await put_faults(http, {"errors": [{"code": code, "rate": 1, "verbs": ["list"]}]})

    async with http.get(PODS) as listing:
        body = await listing.json()
    async with http.post(PODS, json=agent("a1")) as created:
        assert created.status == 201

    assert (listing.status, body["kind"], body["reason"]) == (code, "Status", reason)


async def test_faults_read_back_and_clear(http: aiohttp.ClientSession) -> None:
    doc = {"dropExecAfterSeconds": 2.5, "closeWatchesAfterSeconds": 10, "seed": 7}
    await put_faults(http, doc)

    async with http.get("/sandbox/v1/faults") as response:
        current = await response.json()
    async with http.delete("/sandbox/v1/faults") as cleared:
        assert cleared.status == 200
    async with http.get("/sandbox/v1/faults") as response:
        after = await response.json()

    assert {k: current[k] for k in doc} == doc
    assert after["dropExecAfterSeconds"] is None and after["errors"] == []


async def test_latency_holds_the_request_in_flight(
    http: aiohttp.ClientSession, until: Callable[..., Awaitable[Any]]
) -> None:
    await put_faults(http, {"latency": {"ms": 1000, "verbs": ["list"]}})
    listing = asyncio.create_task(http.get(PODS))

    async def held() -> bool:
        return bool((await stats(http))["connections"]["requests"]["current"] == 1)

    await until(held, WAIT, "the list to be held by the injected latency")
    assert not listing.done()
    response = await asyncio.wait_for(listing, WAIT)
    assert response.status == 200
    response.release()
