"""Fixtures of the step tests.

- A real shell process standing in for an exec stream into a container (`container`,
  `open_shell`...), for the session protocol's tests.
- `buildsteps`: AgentPools and BuildSteps created with the test's client (`kube_api`), for
  tests that run the whole operator (the shared `operator` fixture) on the sandbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes_asyncio.client import ApiClient
from step_client import BuildSteps

from agentpool.steps.protocol import BOOTSTRAP_COMMAND
from agentpool.steps.session import Session
from agentpool_sandbox import reaper
from agentpool_sandbox.cluster import Sandbox

BUSYBOX = shutil.which("busybox")


@dataclass(frozen=True)
class Container:
    """A shell flavour plus the state dir shared by all sessions into the same 'container'."""

    sh: str
    env: dict[str, str]
    state_dir: Path
    root: Path


class ShellExec:
    """Implements the ExecSession contract over a local `sh` subprocess."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self._queue: asyncio.Queue[tuple[int, bytes] | None] = asyncio.Queue()
        self._open = 2
        self._pumps = [
            asyncio.create_task(self._pump(1, proc.stdout)),
            asyncio.create_task(self._pump(2, proc.stderr)),
        ]

    async def _pump(self, channel: int, stream: asyncio.StreamReader | None) -> None:
        assert stream is not None
        try:
            while data := await stream.read(65536):
                await self._queue.put((channel, data))
        finally:
            self._open -= 1
            if self._open == 0:
                await self._queue.put(None)

    async def write(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        await self.proc.stdin.drain()

    async def close_stdin(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()

    async def read(self) -> tuple[int, bytes] | None:
        if self._open == 0 and self._queue.empty():
            return None
        return await self._queue.get()

    async def result(self) -> int:
        return await self.proc.wait()

    async def close(self) -> None:
        self.drop()
        await self.proc.wait()
        for pump in self._pumps:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump

    def drop(self) -> None:
        """Kill the driver and everything in its process group, as a lost connection would."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)


async def open_shell(container: Container) -> ShellExec:
    command = [container.sh, *BOOTSTRAP_COMMAND[1:]]
    proc = await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=container.env,
        cwd=container.root,
        start_new_session=True,
    )
    return ShellExec(proc)


def _make_container(tmp_path: Path, flavour: str) -> Container:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
    sh = "/usr/bin/dash"
    if flavour == "bash":
        sh = "/usr/bin/bash"
        env["AGENTPOOL_SH"] = sh
    if flavour.startswith("busybox"):
        if BUSYBOX is None:
            pytest.skip("busybox is not installed")
        # A busybox-only userland: every command the driver runs is a busybox applet.
        bindir = tmp_path / "bb"
        bindir.mkdir()
        applets = ["sh", "cat", "dd", "wc", "tail", "mv", "rm", "mkdir", "sleep", "kill"]
        applets += ["echo", "printf", "ls", "touch", "true", "false", "env"]
        if flavour == "busybox":
            applets.append("setsid")
        for applet in applets:
            (bindir / applet).symlink_to(BUSYBOX)
        sh = str(bindir / "sh")
        env["PATH"] = str(bindir)
        env["AGENTPOOL_SH"] = sh
    state = tmp_path / "state"
    env["AGENTPOOL_STATE_DIR"] = str(state)
    return Container(sh=sh, env=env, state_dir=state, root=tmp_path)


@pytest.fixture(params=["dash", "busybox", "bash"])
def container(request: pytest.FixtureRequest, tmp_path: Path) -> Container:
    return _make_container(tmp_path, request.param)


OpenSession = Callable[[], Awaitable[tuple[Session, ShellExec]]]


@pytest.fixture
async def open_session(container: Container) -> AsyncIterator[OpenSession]:
    opened: list[tuple[Session, ShellExec]] = []

    async def opener() -> tuple[Session, ShellExec]:
        shell = await open_shell(container)
        session = await Session.start(shell, tail_bytes=4096)
        opened.append((session, shell))
        return session, shell

    yield opener
    for session, _ in opened:
        await session.abort()
    # Steps are detached on purpose; the test must not leave them behind.
    for pid_file in [*container.state_dir.glob("*/pid"), *container.state_dir.glob("*/started")]:
        with contextlib.suppress(ProcessLookupError, ValueError, PermissionError):
            pid = int(pid_file.read_text())
            if pid > 1:  # killpg(0) would kill pytest's own group
                os.killpg(pid, signal.SIGKILL)


async def wait_for(condition: Callable[[], bool], within: float = 10.0) -> None:
    """Poll a real condition with a bounded wait: a process ending in another session or a
    file appearing raises no event this test could await."""
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


@pytest.fixture
def until() -> Callable[[Callable[[], bool], float], Awaitable[None]]:
    return wait_for


@pytest.fixture
def alive() -> Callable[[int], bool]:
    return reaper.alive


@pytest.fixture
def container_without_setsid(tmp_path: Path) -> Container:
    return _make_container(tmp_path, "busybox-nosetsid")


@pytest.fixture
def shell_opener() -> Callable[[Container], Awaitable[ShellExec]]:
    return open_shell


@pytest.fixture
def buildsteps(kube_api: ApiClient, cluster: Sandbox) -> BuildSteps:
    return BuildSteps(kube_api, cluster)
