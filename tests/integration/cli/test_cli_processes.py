"""`agentpool sandbox` and `agentpool run` as real processes: they serve, then stop on signals."""

from __future__ import annotations

import asyncio
import signal
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from cli_cluster import AGENTPOOL, ENV, free_port

from agentpool_sandbox.cluster import Sandbox

EXIT_WITHIN = 20.0


async def start(*args: str, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *AGENTPOOL, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )


async def stop(process: asyncio.subprocess.Process, signum: int) -> int:
    process.send_signal(signum)
    async with asyncio.timeout(EXIT_WITHIN):
        return await process.wait()


def answers(url: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        def get() -> bool:
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    return bool(response.status == 200)
            except OSError:
                return False

        return await asyncio.to_thread(get)

    return check


async def test_sandbox_prints_its_kubeconfig_and_stops_on_sigterm(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    process = await start("sandbox", "--kubeconfig", str(kubeconfig), env=ENV)
    assert process.stdout is not None
    try:
        async with asyncio.timeout(EXIT_WITHIN):
            line = await process.stdout.readline()
    finally:
        code = await stop(process, signal.SIGTERM)

    assert line.decode().strip() == str(kubeconfig)
    assert "server: http://127.0.0.1:" in kubeconfig.read_text()
    assert code == 0


async def test_run_serves_on_the_flag_port_over_the_variable_and_stops_on_sigterm(
    cluster: Sandbox, until: Callable[..., Awaitable[Any]]
) -> None:
    flag_port, env_port = free_port(), free_port()
    env = {**ENV, "AGENTPOOL_METRICS_PORT": str(env_port), "AGENTPOOL_LIVENESS_PORT": "0"}
    process = await start(
        "run",
        "--standalone",
        "--namespace=default",
        f"--metrics-port={flag_port}",
        f"--kubeconfig={cluster.kubeconfig_path}",
        env=env,
    )
    try:
        await until(answers(f"http://127.0.0.1:{flag_port}/debug/connections"), 20.0, "metrics")
        env_port_answers = await answers(f"http://127.0.0.1:{env_port}/metrics")()
    finally:
        code = await stop(process, signal.SIGTERM)

    assert not env_port_answers
    assert code == 0
