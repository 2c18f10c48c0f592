"""Containers whose main process exits: terminated status, restartPolicy, back-off, logs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agentpool_sandbox.cluster import Sandbox

Pod = dict[str, Any]
WAIT = 15.0
LONG_RUNNING = "trap 'exit 0' TERM; while true; do sleep 3600 & wait $!; done"


@pytest.fixture
async def sandbox(tmp_path: Path) -> AsyncIterator[Sandbox]:
    async with Sandbox(state_dir=tmp_path / "state", time_scale=0.2) as sb:
        yield sb


def pod(name: str, policy: str | None, *scripts: str, profile: str | None = None) -> Pod:
    spec: dict[str, Any] = {
        "containers": [
            {"name": f"c{i}", "image": "busybox", "command": ["sh", "-c", script]}
            for i, script in enumerate(scripts)
        ]
    }
    if policy:
        spec["restartPolicy"] = policy
    annotations = {"sandbox.agentpool.dev/profile": profile} if profile else {}
    return {"metadata": {"name": name, "annotations": annotations}, "spec": spec}


async def watch_until(sandbox: Sandbox, manifest: Pod, done: Callable[[Pod], bool]) -> list[Pod]:
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


def phase(obj: Pod) -> str:
    return str((obj.get("status") or {}).get("phase", ""))


def statuses(obj: Pod) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in (obj.get("status") or {}).get("containerStatuses") or []}


def conditions(obj: Pod) -> dict[str, tuple[str, str | None]]:
    return {
        c["type"]: (c["status"], c.get("reason"))
        for c in (obj.get("status") or {}).get("conditions") or []
    }


async def test_never_and_exit_zero_is_succeeded_with_a_completed_container(
    sandbox: Sandbox,
) -> None:
    versions = await watch_until(
        sandbox, pod("once", "Never", "echo done"), lambda o: phase(o) == "Succeeded"
    )

    final = versions[-1]
    terminated = statuses(final)["c0"]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (0, "Completed")
    assert statuses(final)["c0"]["ready"] is False
    assert conditions(final)["Ready"] == ("False", "PodCompleted")
    assert "Running" in [phase(v) for v in versions]  # it ran before it completed
    async with (
        aiohttp.ClientSession(sandbox.url) as http,
        http.get("/api/v1/namespaces/default/pods/once/log") as response,
    ):
        assert await response.text() == "done\n"


async def test_never_and_a_failure_is_failed_with_the_exit_code(sandbox: Sandbox) -> None:
    versions = await watch_until(
        sandbox, pod("broken", "Never", "exit 3"), lambda o: phase(o) == "Failed"
    )

    terminated = statuses(versions[-1])["c0"]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (3, "Error")
    assert statuses(versions[-1])["c0"]["restartCount"] == 0


async def test_a_killed_process_reports_128_plus_the_signal(sandbox: Sandbox) -> None:
    # `$$$$`: Kubernetes expands `$$` in a command to `$`.
    versions = await watch_until(
        sandbox, pod("killed", "Never", "kill -9 $$$$"), lambda o: phase(o) == "Failed"
    )

    assert statuses(versions[-1])["c0"]["state"]["terminated"]["exitCode"] == 137


async def test_always_restarts_with_crash_loop_back_off_in_between(sandbox: Sandbox) -> None:
    def backing_off_after_restarts(obj: Pod) -> bool:
        entry = statuses(obj).get("c0") or {}
        waiting = entry.get("state", {}).get("waiting") or {}
        return waiting.get("reason") == "CrashLoopBackOff" and entry["restartCount"] >= 2

    versions = await watch_until(
        sandbox, pod("looping", None, "echo tick; exit 1"), backing_off_after_restarts
    )

    final = statuses(versions[-1])["c0"]
    assert phase(versions[-1]) == "Running"
    assert final["lastState"]["terminated"]["exitCode"] == 1
    messages = [
        statuses(v)["c0"]["state"]["waiting"]["message"]
        for v in versions
        if "waiting" in statuses(v).get("c0", {}).get("state", {})
        and statuses(v)["c0"]["restartCount"] > 0
    ]
    # The first restart is immediate, then the back-off doubles: 10s, 20s (Kubernetes' figures).
    assert [m.split(" restarting")[0] for m in dict.fromkeys(messages)] == [
        "back-off 10s",
        "back-off 20s",
    ]
    assert "restarting failed container=c0 pod=looping_default(" in messages[0]
    assert conditions(versions[-1])["Ready"] == ("False", "ContainersNotReady")
    counts = [statuses(v)["c0"]["restartCount"] for v in versions if statuses(v)]
    assert counts == sorted(counts)  # restartCount only grows
    kinds = [next(iter(statuses(v)["c0"]["state"])) for v in versions if statuses(v)]
    assert "terminated" in kinds and "running" in kinds


async def test_always_restarts_a_command_that_completes_too(sandbox: Sandbox) -> None:
    versions = await watch_until(
        sandbox,
        pod("again", "Always", "true"),
        lambda o: statuses(o).get("c0", {}).get("restartCount", 0) >= 1,
    )

    entry = statuses(versions[-1])["c0"]
    assert entry["lastState"]["terminated"]["reason"] == "Completed"
    assert phase(versions[-1]) == "Running"


async def test_on_failure_restarts_until_the_command_succeeds(sandbox: Sandbox) -> None:
    script = 'test -f "$HOME/tried" && exit 0; touch "$HOME/tried"; exit 2'
    versions = await watch_until(
        sandbox, pod("retry", "OnFailure", script), lambda o: phase(o) == "Succeeded"
    )

    entry = statuses(versions[-1])["c0"]
    assert entry["restartCount"] == 1
    assert entry["lastState"]["terminated"]["exitCode"] == 2
    assert entry["state"]["terminated"]["reason"] == "Completed"


async def test_one_container_exiting_leaves_the_pod_running_but_not_ready(
    sandbox: Sandbox,
) -> None:
    versions = await watch_until(
        sandbox,
        pod("sidecar", "Never", "exit 0", LONG_RUNNING),
        lambda o: "terminated" in statuses(o).get("c0", {}).get("state", {}),
    )

    final = versions[-1]
    assert phase(final) == "Running"
    assert "running" in statuses(final)["c1"]["state"]
    assert conditions(final)["Ready"] == ("False", "ContainersNotReady")
    assert conditions(final)["ContainersReady"][0] == "False"


async def test_long_running_commands_stay_running(sandbox: Sandbox) -> None:
    """Agent pods run `sleep infinity`-like commands: they must not be disturbed."""
    await watch_until(
        sandbox,
        pod("agent", None, LONG_RUNNING, profile="virtual-kubelet"),
        lambda o: phase(o) == "Running",
    )
    await asyncio.sleep(0.5)

    current = sandbox.store.get("pods", "default", "agent")
    assert phase(current) == "Running"
    assert statuses(current)["c0"]["ready"] is True
    assert statuses(current)["c0"]["restartCount"] == 0


async def test_previous_log_is_the_last_instance(sandbox: Sandbox) -> None:
    script = 'n=$(cat "$HOME/n" 2>/dev/null || echo 0); echo "run $n"; echo $((n+1)) > "$HOME/n"'
    script += '; [ "$n" -ge 1 ] && exec sleep 1000; exit 1'
    await watch_until(
        sandbox,
        pod("twice", None, script),
        lambda o: (
            statuses(o).get("c0", {}).get("ready") is True
            and statuses(o)["c0"]["restartCount"] == 1
        ),
    )
    base = "/api/v1/namespaces/default/pods/twice/log"

    async with aiohttp.ClientSession(sandbox.url) as http:
        for _ in range(100):
            async with http.get(base) as response:
                current = await response.text()
            if current:
                break
            await asyncio.sleep(0.02)
        async with http.get(base, params={"previous": "true"}) as response:
            previous = await response.text()

    assert (previous, current) == ("run 0\n", "run 1\n")
