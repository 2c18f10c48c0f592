"""The simulated kubelet: each profile's statuses in order, processes, directories and logs."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agentpool_sandbox import profiles
from agentpool_sandbox.cluster import Sandbox
from agentpool_sandbox.kubelet import KUBELET_KEY, Kubelet
from agentpool_sandbox.reaper import alive

Pod = dict[str, Any]
WAIT = 10.0


@pytest.fixture
async def sandbox(tmp_path: Path) -> AsyncIterator[Sandbox]:
    extra = tmp_path / "profiles.yaml"
    extra.write_text(
        "profiles:\n"
        "  instant-fail:\n"
        "    steps:\n"
        "      - phase: Failed\n"
        "        conditions: {PodScheduled: 'True'}\n"
        "        containers: {state: terminated, reason: Error, exitCode: 2}\n"
    )
    async with Sandbox(state_dir=tmp_path / "state", profiles_file=extra, time_scale=0.2) as sb:
        yield sb


def pod(name: str, profile: str | None = None, seed: str | None = None, **container: Any) -> Pod:
    annotations = {}
    if profile:
        annotations[profiles.PROFILE_ANNOTATION] = profile
    if seed is not None:
        annotations[profiles.SEED_ANNOTATION] = seed
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"containers": [{"name": "main", "image": "alpine:3", **container}]},
    }


def signature(obj: Pod) -> tuple[str, tuple[str, ...], int]:
    """Phase, each container's state (with reason) and the total restart count."""
    status = obj.get("status") or {}
    states = []
    restarts = 0
    for entry in status.get("containerStatuses") or []:
        kind, detail = next(iter(entry["state"].items()))
        reason = detail.get("reason")
        ready = "+ready" if entry.get("ready") else ""
        states.append(f"{kind}:{reason}" if reason else f"{kind}{ready}")
        restarts += entry.get("restartCount", 0)
    return status.get("phase", ""), tuple(states), restarts


async def create_and_watch(
    sandbox: Sandbox, manifest: Pod, done: Callable[[Pod], bool]
) -> list[Pod]:
    """Every version of the pod from its creation until `done`, in order."""
    _, before = sandbox.store.list("pods", "default")
    sandbox.store.create("pods", "default", manifest)
    seen: list[Pod] = []

    async def collect() -> None:
        async for _, obj in sandbox.store.subscribe("pods", "default", since=before):
            if obj["metadata"]["name"] == manifest["metadata"]["name"]:
                seen.append(obj)
                if done(obj):
                    return

    await asyncio.wait_for(collect(), WAIT)
    return seen


def path_of(versions: list[Pod]) -> list[tuple[str, tuple[str, ...], int]]:
    deduplicated: list[tuple[str, tuple[str, ...], int]] = []
    for version in versions:
        sig = signature(version)
        if not deduplicated or deduplicated[-1] != sig:
            deduplicated.append(sig)
    return deduplicated


def running(obj: Pod) -> bool:
    return (obj.get("status") or {}).get("phase") == "Running"


def kubelet_of(sandbox: Sandbox) -> Kubelet:
    return sandbox.app[KUBELET_KEY].get()


async def test_standard_goes_from_container_creating_to_running_ready(sandbox: Sandbox) -> None:
    versions = await create_and_watch(sandbox, pod("std"), running)

    assert path_of(versions)[-2:] == [
        ("Pending", ("waiting:ContainerCreating",), 0),
        ("Running", ("running+ready",), 0),
    ]
    assert versions[-1]["spec"]["nodeName"] == "sandbox-node"
    conditions = {c["type"]: c["status"] for c in versions[-1]["status"]["conditions"]}
    assert conditions["Ready"] == conditions["ContainersReady"] == "True"


def _seed(window: bool) -> str:
    """A seed annotation whose first draw does (or does not) play the 14/15 Pending window."""
    return next(str(s) for s in range(1000) if (random.Random(str(s)).random() < 14 / 15) == window)


@pytest.mark.parametrize("window", [True, False])
async def test_virtual_kubelet_reports_running_containers_while_pending(
    sandbox: Sandbox, window: bool
) -> None:
    versions = await create_and_watch(
        sandbox, pod("aci", "virtual-kubelet", seed=_seed(window)), running
    )

    expected = [
        ("Pending", ("waiting:Creating",), 0),
        ("Pending", ("waiting:Waiting",), 0),
        *([("Pending", ("running+ready",), 0)] if window else []),
        ("Running", ("running+ready",), 0),
    ]
    assert path_of(versions)[-len(expected) :] == expected


async def test_image_pull_backoff_alternates_forever(sandbox: Sandbox) -> None:
    reasons: list[str] = []

    def third_err_image_pull(obj: Pod) -> bool:
        states = signature(obj)[1]
        if states and (not reasons or reasons[-1] != states[0]):
            reasons.append(states[0])
        return reasons.count("waiting:ErrImagePull") == 2

    versions = await create_and_watch(
        sandbox, pod("pull", "image-pull-backoff"), third_err_image_pull
    )

    assert reasons == [
        "waiting:ContainerCreating",
        "waiting:ErrImagePull",
        "waiting:ImagePullBackOff",
        "waiting:ErrImagePull",
    ]
    message = versions[-1]["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
    assert '"alpine:3"' in message
    assert versions[-1]["status"]["phase"] == "Pending"


async def test_crash_loop_restarts_with_growing_count(sandbox: Sandbox) -> None:
    versions = await create_and_watch(
        sandbox, pod("crash", "crash-loop"), lambda obj: signature(obj)[2] >= 2
    )

    assert path_of(versions)[-7:] == [
        ("Running", ("running+ready",), 0),
        ("Running", ("terminated:Error",), 0),
        ("Running", ("waiting:CrashLoopBackOff",), 0),
        ("Running", ("running+ready",), 1),
        ("Running", ("terminated:Error",), 1),
        ("Running", ("waiting:CrashLoopBackOff",), 1),
        ("Running", ("running+ready",), 2),
    ]
    last = versions[-1]["status"]["containerStatuses"][0]
    assert last["lastState"]["terminated"]["exitCode"] == 1


def _condition(obj: Pod, kind: str) -> dict[str, Any]:
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition["type"] == kind:
            return dict(condition)
    return {}


async def test_unschedulable_stays_pending_without_a_node(sandbox: Sandbox) -> None:
    versions = await create_and_watch(
        sandbox,
        pod("big", "unschedulable"),
        lambda obj: _condition(obj, "PodScheduled").get("reason") == "Unschedulable",
    )

    last = versions[-1]
    assert last["status"]["phase"] == "Pending"
    assert "nodeName" not in last["spec"]
    assert _condition(last, "PodScheduled")["message"].startswith("0/1 nodes are available")


async def test_unknown_profile_leaves_pod_pending_with_a_clear_message(sandbox: Sandbox) -> None:
    versions = await create_and_watch(
        sandbox, pod("typo", "standrd"), lambda obj: bool(_condition(obj, "PodScheduled"))
    )

    condition = _condition(versions[-1], "PodScheduled")
    assert versions[-1]["status"]["phase"] == "Pending"
    assert condition["status"] == "False"
    assert 'sandbox profile "standrd"' in condition["message"]
    assert "virtual-kubelet" in condition["message"]


async def test_profiles_file_adds_profiles(sandbox: Sandbox) -> None:
    versions = await create_and_watch(
        sandbox, pod("fails", "instant-fail"), lambda obj: obj["status"].get("phase") == "Failed"
    )

    terminated = versions[-1]["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["reason"], terminated["exitCode"]) == ("Error", 2)


async def test_container_command_runs_in_its_directory_with_env_and_logs(sandbox: Sandbox) -> None:
    manifest = pod(
        "worker",
        command=["sh", "-c", 'echo "$GREETING from $(pwd)"; exec sleep 1000'],
        env=[{"name": "GREETING", "value": "hello"}],
        workingDir="/workspace",
    )
    await create_and_watch(sandbox, manifest, running)
    directory = sandbox.state_dir / "pods" / "default" / "worker" / "main"
    container = kubelet_of(sandbox).runtime.container("default", "worker", "main")
    assert container is not None and container.main is not None

    async with aiohttp.ClientSession(sandbox.url) as http:
        log = await _wait_for_log(http, "/api/v1/namespaces/default/pods/worker/log")

    assert log == f"hello from {(directory / 'workspace').resolve()}\n"


async def _wait_for_log(http: aiohttp.ClientSession, path: str) -> str:
    async def poll() -> str:
        while True:
            async with http.get(path) as response:
                text = await response.text()
            if text:
                return text
            await asyncio.sleep(0.02)

    return await asyncio.wait_for(poll(), WAIT)


async def _until(condition: Callable[[], bool]) -> None:
    async def poll() -> None:
        # Process exit and directory removal have no event to await: poll, bounded.
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.02)

    await asyncio.wait_for(poll(), WAIT)


async def test_deleting_the_pod_kills_its_processes_and_removes_its_directory(
    sandbox: Sandbox,
) -> None:
    await create_and_watch(sandbox, pod("doomed", command=["sleep", "1000"]), running)
    container = kubelet_of(sandbox).runtime.container("default", "doomed", "main")
    assert container is not None and container.main is not None
    pid = container.main.process.pid
    directory = sandbox.state_dir / "pods" / "default" / "doomed"
    assert alive(pid) and directory.is_dir()

    sandbox.store.delete("pods", "default", "doomed")
    await _until(lambda: not alive(pid) and not directory.exists())


async def test_logs_tail_and_follow(sandbox: Sandbox) -> None:
    script = "for i in 1 2 3 4 5; do echo line$i; done; while [ ! -f stop ]; do sleep 0.05; done"
    await create_and_watch(sandbox, pod("chatty", command=["sh", "-c", script]), running)
    base = "/api/v1/namespaces/default/pods/chatty/log"
    directory = sandbox.state_dir / "pods" / "default" / "chatty" / "main"

    async with aiohttp.ClientSession(sandbox.url) as http:
        await _wait_for_log(http, base + "?tailLines=1")
        async with http.get(base, params={"tailLines": "2"}) as response:
            tail = await response.text()
        async with http.get(base, params={"follow": "true", "container": "main"}) as response:
            first = await response.content.readuntil(b"line5\n")
            (directory / "stop").touch()
            rest = await asyncio.wait_for(response.content.read(), WAIT)

    assert tail == "line4\nline5\n"
    assert first.decode() + rest.decode() == "".join(f"line{i}\n" for i in range(1, 6))


async def test_log_of_a_container_not_started_yet_is_a_bad_request(sandbox: Sandbox) -> None:
    await create_and_watch(
        sandbox,
        pod("stuck", "image-pull-backoff"),
        lambda obj: "waiting:ErrImagePull" in signature(obj)[1],
    )

    async with (
        aiohttp.ClientSession(sandbox.url) as http,
        http.get("/api/v1/namespaces/default/pods/stuck/log") as response,
    ):
        body = await response.json()

    assert response.status == 400
    assert body["message"] == 'container "main" in pod "stuck" is waiting to start: ErrImagePull'


async def test_sandbox_exit_leaves_no_process_behind(tmp_path: Path) -> None:
    async with Sandbox(state_dir=tmp_path / "state") as sb:
        await create_and_watch(sb, pod("left", command=["sleep", "1000"]), running)
        container = kubelet_of(sb).runtime.container("default", "left", "main")
        assert container is not None and container.main is not None
        pid = container.main.process.pid

    await _until(lambda: not alive(pid))


async def test_pods_are_bound_to_a_registered_ready_node(sandbox: Sandbox) -> None:
    versions = await create_and_watch(sandbox, pod("bound"), running)

    node = sandbox.store.get("nodes", None, versions[-1]["spec"]["nodeName"])

    conditions = {c["type"]: c["status"] for c in node["status"]["conditions"]}
    assert conditions == {"Ready": "True"}


async def test_abandoned_log_follow_ends_on_the_server(sandbox: Sandbox) -> None:
    await create_and_watch(sandbox, pod("idle"), running)
    async with aiohttp.ClientSession(sandbox.url) as http:
        follow = await http.get("/api/v1/namespaces/default/pods/idle/log?follow=true")
        assert follow.status == 200
        follow.close()

        async def open_connections() -> int:
            async with http.get("/sandbox/v1/stats") as response:
                return int((await response.json())["connections"]["current"])

        async def drained() -> None:
            # The server's side of a connection has no event a client can await: poll stats.
            while await open_connections():  # noqa: ASYNC110
                await asyncio.sleep(0.02)

        await asyncio.wait_for(drained(), WAIT)


async def test_a_bad_profiles_file_stops_the_sandbox_with_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("profiles: {broken: {steps: [{phase: Runing, containers: {state: none}}]}}")

    with pytest.raises(profiles.ProfileError, match=r"profiles.broken.steps\[0\].phase"):
        async with Sandbox(state_dir=tmp_path / "state", profiles_file=bad):
            pass
