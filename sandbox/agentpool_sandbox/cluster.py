"""The sandbox cluster: API server, garbage collector and simulated kubelet in one process."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import tempfile
from pathlib import Path
from types import TracebackType

from aiohttp import web

from agentpool_sandbox import kubeconfig, kubelet, stats
from agentpool_sandbox.server import ApiServer
from agentpool_sandbox.store import Store

HOST = "127.0.0.1"


class Sandbox:
    """`async with Sandbox() as sandbox:` serves a cluster at `sandbox.url`."""

    def __init__(
        self,
        port: int = 0,
        state_dir: Path | None = None,
        profiles_file: Path | None = None,
        kubeconfig_path: Path | None = None,
        *,
        bookmark_interval: float = 60.0,
        watch_history: int = 2000,
        time_scale: float | None = None,
    ) -> None:
        self.port = port
        self.profiles_file = profiles_file
        self.time_scale = time_scale
        self._given_state_dir = state_dir
        self._given_kubeconfig = kubeconfig_path
        self.store = Store(history=watch_history)
        self.server = ApiServer(self.store, bookmark_interval=bookmark_interval)
        self.app = web.Application(client_max_size=64 * 1024 * 1024)
        self.url = ""
        self.state_dir = Path()
        self.kubeconfig_path = Path()
        self._runner: web.AppRunner | None = None
        self._gc: asyncio.Task[None] | None = None
        self._temporary: Path | None = None

    async def __aenter__(self) -> Sandbox:
        if self._given_state_dir is None:
            self._temporary = Path(tempfile.mkdtemp(prefix="agentpool-sandbox-"))
            self.state_dir = self._temporary
        else:
            self.state_dir = self._given_state_dir
            self.state_dir.mkdir(parents=True, exist_ok=True)
        self.server.add_routes(self.app)
        stats.install(self.app, self)
        kubelet.install(self.app, self)
        self.server.add_resource_routes(self.app)
        self._gc = asyncio.create_task(self.store.run_garbage_collector(), name="sandbox-gc")
        self._runner = web.AppRunner(
            self.app, handle_signals=False, shutdown_timeout=0.25, handler_cancellation=True
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, HOST, self.port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self.port
        self.url = f"http://{HOST}:{self.port}"
        path = self._given_kubeconfig or self.state_dir / "kubeconfig"
        self.kubeconfig_path = kubeconfig.write(path, self.url)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._gc is not None:
            self._gc.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._gc
        if self._temporary is not None:
            shutil.rmtree(self._temporary, ignore_errors=True)


async def serve(
    port: int = 0,
    kubeconfig_path: Path | None = None,
    profiles_file: Path | None = None,
    state_dir: Path | None = None,
) -> None:
    """Run a sandbox until cancelled, printing where its kubeconfig is."""
    async with Sandbox(port, state_dir, profiles_file, kubeconfig_path) as sandbox:
        print(sandbox.kubeconfig_path, flush=True)
        await asyncio.Event().wait()


async def serve_until_signalled(
    port: int = 0,
    kubeconfig_path: Path | None = None,
    profiles_file: Path | None = None,
    state_dir: Path | None = None,
) -> None:
    """`serve` until SIGINT or SIGTERM, then stop in order."""
    # SIGTERM (what process managers send) must stop in order like Ctrl-C does, so that the
    # sandbox kills its container processes and removes its temporary state directory.
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, task.cancel)
    try:
        with contextlib.suppress(asyncio.CancelledError):
            await serve(port, kubeconfig_path, profiles_file, state_dir)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
