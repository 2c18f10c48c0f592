"""`python -m agentpool.sandbox`: serve a sandbox cluster until interrupted."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path

import click

from agentpool.sandbox.cluster import serve


async def _serve_until_signalled(
    port: int, kubeconfig_path: Path | None, profiles_file: Path | None, state_dir: Path | None
) -> None:
    # SIGTERM (what process managers send) must stop in order like Ctrl-C does, so that the
    # sandbox kills its container processes and removes its temporary state directory.
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await serve(port, kubeconfig_path, profiles_file, state_dir)


@click.command()
@click.option("--port", type=int, default=0, show_default=True, help="0 picks a free port.")
@click.option("--kubeconfig", "kubeconfig_path", type=click.Path(path_type=Path), default=None)
@click.option("--profiles", "profiles_file", type=click.Path(path_type=Path), default=None)
@click.option("--state-dir", type=click.Path(path_type=Path), default=None)
def main(
    port: int, kubeconfig_path: Path | None, profiles_file: Path | None, state_dir: Path | None
) -> None:
    """Serve a local Kubernetes API and simulated kubelet; prints the kubeconfig path."""
    asyncio.run(_serve_until_signalled(port, kubeconfig_path, profiles_file, state_dir))


if __name__ == "__main__":
    main()
