"""`python -m agentpool_sandbox` as a user runs it: options, kubectl against it, stop signals."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentpool_sandbox.reaper import alive

Until = Callable[..., Awaitable[Any]]
KUBECTL = Path(sys.executable).parent / "kubectl"
DEADLINE = 30.0
PROFILES = """\
profiles:
  instant:
    description: Running and ready at once.
    steps:
      - phase: Running
        conditions: {PodScheduled: "True", ContainersReady: "True", Ready: "True"}
        containers: {state: running, ready: true}
"""
POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: worker
  annotations: {sandbox.agentpool.dev/profile: instant}
spec:
  containers:
  - name: main
    image: busybox
    # `$$$$` is the shell's `$$` once the kubelet has expanded `$(VAR)` references.
    command: [sh, -c, 'echo $$$$ > main.pid; exec sleep 1000']
"""


@dataclass
class Served:
    process: asyncio.subprocess.Process
    printed: str
    kubeconfig: Path
    state_dir: Path
    port: int


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def kubectl(kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    process = await asyncio.create_subprocess_exec(
        str(KUBECTL),
        f"--kubeconfig={kubeconfig}",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(DEADLINE):
        out, err = await process.communicate(stdin.encode() if stdin else None)
    assert process.returncode == 0, f"kubectl {' '.join(args)}: {err.decode()}"
    return out.decode()


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    profiles = tmp_path / "profiles.yaml"
    profiles.write_text(PROFILES)
    kubeconfig, state_dir, port = tmp_path / "cfg" / "kubeconfig", tmp_path / "state", free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agentpool_sandbox",
        f"--port={port}",
        f"--kubeconfig={kubeconfig}",
        f"--profiles={profiles}",
        f"--state-dir={state_dir}",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(DEADLINE):
            printed = (await process.stdout.readline()).decode().strip()
        yield Served(process, printed, kubeconfig, state_dir, port)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_prints_the_kubeconfig_it_wrote_for_the_chosen_port(served: Served) -> None:
    config = yaml.safe_load(served.kubeconfig.read_text())

    namespaces = await kubectl(served.kubeconfig, "get", "namespaces", "-o=name")

    assert served.printed == str(served.kubeconfig)
    assert config["clusters"][0]["cluster"]["server"] == f"http://127.0.0.1:{served.port}"
    assert "namespace/default" in namespaces.split()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_runs_pods_from_the_profiles_file_and_stops_them_on_a_signal(
    served: Served, until: Until, signum: signal.Signals
) -> None:
    await kubectl(served.kubeconfig, "apply", "-f", "-", stdin=POD)
    pid_file = served.state_dir / "pods" / "default" / "worker" / "main" / "main.pid"

    async def started() -> bool:
        return pid_file.is_file() and pid_file.read_text().endswith("\n")

    await until(started, DEADLINE, "the container's main process to write its pid")
    pid = int(pid_file.read_text())

    served.process.send_signal(signum)
    async with asyncio.timeout(DEADLINE):
        code = await served.process.wait()

    assert code == 0

    async def gone() -> bool:
        return not alive(pid)

    await until(gone, DEADLINE, "the container process to end with the sandbox")
