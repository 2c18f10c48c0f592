"""No process of a pod outlives it: setsid-detached ones, sandbox shutdown, start-after-remove."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agentpool_sandbox import profiles, reaper
from agentpool_sandbox.cluster import Sandbox
from agentpool_sandbox.containers import ContainerRuntime, PodGone
from agentpool_sandbox.kubelet import KUBELET_KEY

pytestmark = pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs procfs")

WAIT = 10.0
POLL = 0.02
# The container command of examples/agentpool.yaml: its `sleep` is not the group leader.
LOOP = "while true; do sleep 3600 & wait; done"


def pod(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": {profiles.PROFILE_ANNOTATION: "standard"}},
        "spec": {
            "containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", LOOP]}]
        },
    }


def cmdlines(marker: dict[str, str]) -> list[str]:
    found = []
    for pid in reaper.marked(marker):
        try:
            found.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    return found


async def until(check: Callable[[], bool], message: str) -> None:
    for _ in range(int(WAIT / POLL)):
        if check():
            return
        await asyncio.sleep(POLL)
    raise AssertionError(message)


async def detach(runtime: ContainerRuntime, manifest: dict[str, Any]) -> None:
    """Exec a command that leaves a `setsid` process behind, as step keepers do."""
    execution = await runtime.exec(
        manifest,
        "main",
        ["setsid", "sh", "-c", "sleep 300"],
        stdin=False,
        stdout=False,
        stderr=False,
    )
    await execution.process.wait()
    execution.release()


async def running(sandbox: Sandbox, name: str) -> tuple[ContainerRuntime, dict[str, Any]]:
    runtime = sandbox.app[KUBELET_KEY].get().runtime
    sandbox.store.create("pods", "default", pod(name))

    def started() -> bool:
        record = runtime.container("default", name, "main")
        return record is not None and record.main is not None

    await until(started, "container never started")
    return runtime, sandbox.store.get("pods", "default", name)


def uid(manifest: dict[str, Any]) -> str:
    return str(manifest["metadata"]["uid"])


async def test_deleting_a_pod_kills_its_detached_processes(tmp_path: Path) -> None:
    async with Sandbox(state_dir=tmp_path, time_scale=0.1) as sandbox:
        runtime, manifest = await running(sandbox, "detached")
        marker = runtime.marker(uid(manifest))
        await detach(runtime, manifest)
        await until(lambda: "sleep 300 " in cmdlines(marker), "the setsid sleep never ran")

        sandbox.store.delete("pods", "default", "detached")
        directory = runtime.pod_directory("default", "detached")
        await until(lambda: not directory.exists(), "the pod was never removed")

        assert cmdlines(marker) == []


async def test_sandbox_shutdown_kills_every_container_process(tmp_path: Path) -> None:
    async with Sandbox(state_dir=tmp_path, time_scale=0.1) as sandbox:
        runtime, manifest = await running(sandbox, "shutdown")
        await detach(runtime, manifest)
        marker = runtime.marker()
        await until(lambda: "sleep 300 " in cmdlines(marker), "the setsid sleep never ran")

    assert cmdlines(marker) == []


async def test_a_start_that_loses_the_race_with_removal_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = ContainerRuntime(tmp_path)
    manifest = pod("racing")
    manifest["metadata"].update(namespace="default", uid="racing-uid")
    spawn = asyncio.create_subprocess_exec

    async def spawn_then_remove(*args: Any, **kwargs: Any) -> Any:
        # The pod is deleted while its container process is being started.
        process = await spawn(*args, **kwargs)
        await runtime.remove_pod("default", "racing", "racing-uid")
        return process

    monkeypatch.setattr(asyncio, "create_subprocess_exec", spawn_then_remove)
    with pytest.raises(PodGone):
        await runtime.start(manifest, "main")
    monkeypatch.undo()

    assert cmdlines(runtime.marker("racing-uid")) == []
    with pytest.raises(PodGone):
        await runtime.exec(manifest, "main", ["sleep", "300"])
    await runtime.close()


async def test_a_replaced_pod_loses_its_detached_processes(tmp_path: Path) -> None:
    runtime = ContainerRuntime(tmp_path)
    manifest = pod("replaced")
    manifest["metadata"].update(namespace="default", uid="old-uid")
    await runtime.start(manifest, "main")
    await detach(runtime, manifest)
    old = runtime.marker("old-uid")
    await until(lambda: "sleep 300 " in cmdlines(old), "the setsid sleep never ran")
    replacement = pod("replaced")
    replacement["metadata"].update(namespace="default", uid="new-uid")

    await runtime.start(replacement, "main")

    await until(lambda: cmdlines(old) == [], "the old pod's processes survived")
    await runtime.close()
    assert cmdlines(runtime.marker()) == []
