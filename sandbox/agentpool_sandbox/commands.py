"""`agentpool sandbox` and `agentpool demo`: the commands this distribution adds to the CLI.

The operator's command line finds them through the entry point group `agentpool.commands`
(see this distribution's pyproject.toml), so the operator never imports the sandbox. Loading
this module must stay cheap and free of the sandbox's own dependencies: `agentpool --help`
loads it, and so does every command the operator's CLI resolves by name. The cluster, the demo
and their schema libraries are imported inside the command that runs them.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path

import click

__all__ = ["demo", "sandbox"]


@click.command()
@click.option("--port", type=int, default=0, show_default=True, help="0 picks a free port.")
@click.option(
    "--kubeconfig",
    "kubeconfig_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to write the kubeconfig (default: in the state directory).",
)
@click.option(
    "--profiles",
    "profiles_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="YAML file of extra kubelet profiles.",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where container directories live (default: a temporary directory, removed at exit).",
)
def sandbox(
    port: int, kubeconfig_path: Path | None, profiles_file: Path | None, state_dir: Path | None
) -> None:
    """Serve a local Kubernetes API and simulated kubelet (development only).

    Prints the kubeconfig path, then serves until interrupted.
    """
    from agentpool_sandbox.cluster import serve_until_signalled  # noqa: PLC0415

    # Serves until SIGINT or SIGTERM, then stops in order (container processes are killed).
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_until_signalled(port, kubeconfig_path, profiles_file, state_dir))


@click.command()
@click.option(
    "--examples",
    "examples_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Manifests to apply (default: the examples shipped with the operator's package).",
)
@click.option(
    "--timeout",
    type=float,
    default=45.0,
    show_default=True,
    help="Seconds to wait for every step to finish.",
)
def demo(examples_dir: Path | None, timeout: float) -> None:
    """Sandbox, CRDs, operator and examples/ in one go; exits 0 when all behaved as designed."""
    from agentpool_sandbox.demo import run as run_demo  # noqa: PLC0415

    ok = run_demo(examples_dir, timeout=timeout)
    sys.exit(0 if ok else 1)
