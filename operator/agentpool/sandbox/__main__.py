"""`python -m agentpool.sandbox`: serve a sandbox cluster until interrupted."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from agentpool.sandbox.cluster import serve_until_signalled


@click.command()
@click.option("--port", type=int, default=0, show_default=True, help="0 picks a free port.")
@click.option("--kubeconfig", "kubeconfig_path", type=click.Path(path_type=Path), default=None)
@click.option("--profiles", "profiles_file", type=click.Path(path_type=Path), default=None)
@click.option("--state-dir", type=click.Path(path_type=Path), default=None)
def main(
    port: int, kubeconfig_path: Path | None, profiles_file: Path | None, state_dir: Path | None
) -> None:
    """Serve a local Kubernetes API and simulated kubelet; prints the kubeconfig path."""
    asyncio.run(serve_until_signalled(port, kubeconfig_path, profiles_file, state_dir))


if __name__ == "__main__":
    main()
