"""`agentpool run|sandbox|demo|status|logs`: the operator's command line.

Thin on purpose: each command parses its options and calls into a module. Everything heavy
(kopf, the sandbox and its schema libraries) is imported inside the command that needs it, so
that the image (which has no sandbox extras) starts `agentpool run` and `agentpool status`
answers quickly.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import click

from agentpool import __version__
from agentpool.config import SETTINGS, Config, ConfigError, Setting

__all__ = ["config_from", "main"]

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_STATUS_URL = "http://127.0.0.1:9090"
ALL_NAMESPACES = "all_namespaces"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="agentpool")
def main() -> None:
    """AgentPool operator: CI build agents and batched build steps on Kubernetes."""


# --- agentpool run -------------------------------------------------------------------------


def _setting_option(setting: Setting) -> Callable[[F], F]:
    """A click option for one setting; None (not given) lets the environment decide."""
    help_text = f"{setting.meaning} [env: {setting.env_var}; default: {setting.default_text}]"
    if setting.name == "namespaces":
        return click.option(setting.flag, setting.name, multiple=True, metavar="NS", help=help_text)
    if isinstance(setting.default, bool):
        # "--x/--no-x": click makes it a switch; default None leaves the decision to the env.
        return click.option(setting.flag, setting.name, default=None, help=help_text)
    return click.option(setting.flag, setting.name, default=None, metavar="VALUE", help=help_text)


def _with_settings(command: F) -> F:
    for setting in reversed(SETTINGS):
        command = _setting_option(setting)(command)
    return command


def config_from(params: Mapping[str, Any], environ: Mapping[str, str]) -> Config:
    """Config from `AGENTPOOL_*` in `environ`, overridden by the flags that were given.

    Flags come as click left them: raw strings (parsed here with the same parsers as the
    variables), booleans, a tuple of namespaces, and `all_namespaces`.
    """
    config = Config.from_env(environ)
    overrides: dict[str, Any] = {}
    for setting in SETTINGS:
        value = params.get(setting.name)
        if value is None or value == ():
            continue
        if isinstance(value, str):
            value = setting.parse(setting.flag.split("/")[0], value)
        elif isinstance(value, tuple):
            value = tuple(v for raw in value for v in setting.parse(setting.flag, raw))
        overrides[setting.name] = value
    if params.get(ALL_NAMESPACES):
        if overrides.get("namespaces"):
            raise ConfigError("--all-namespaces", "cannot be combined with --namespace")
        overrides["namespaces"] = ()
    return config.with_overrides(overrides) if overrides else config


@main.command()
@click.option(
    "--all-namespaces",
    ALL_NAMESPACES,
    is_flag=True,
    default=False,
    help="Watch every namespace (the default when no namespace is given anywhere).",
)
@_with_settings
def run(**params: Any) -> None:
    """Run the operator against the current kubeconfig or the in-cluster config.

    Every setting is also read from its AGENTPOOL_* variable; a flag wins over the variable.
    Stops cleanly on SIGTERM or SIGINT.
    """
    try:
        config = config_from(params, os.environ)
    except ConfigError as error:
        raise click.UsageError(str(error)) from None
    # Imported here: kopf and the API client are not needed by the other commands.
    from agentpool.runtime import run_operator  # noqa: PLC0415

    configure_logging(config)
    asyncio.run(run_operator(config))


def configure_logging(config: Config) -> None:
    """kopf's logging, in the configured format; debug messages only when verbose."""
    import kopf  # noqa: PLC0415

    from agentpool.config import LogFormat  # noqa: PLC0415

    log_format = kopf.LogFormat.JSON if config.log_format is LogFormat.JSON else kopf.LogFormat.FULL
    kopf.configure(verbose=config.verbose, log_format=log_format, log_refkey="k8s")


# --- agentpool sandbox ---------------------------------------------------------------------


@main.command()
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
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_sandbox(port, kubeconfig_path, profiles_file, state_dir))


async def _serve_sandbox(
    port: int, kubeconfig_path: Path | None, profiles_file: Path | None, state_dir: Path | None
) -> None:
    """Serve until SIGINT or SIGTERM, then stop in order (container processes are killed)."""
    from agentpool.sandbox.cluster import serve_until_signalled  # noqa: PLC0415

    await serve_until_signalled(port, kubeconfig_path, profiles_file, state_dir)


# --- agentpool status ----------------------------------------------------------------------


@main.command()
@click.argument("pool", required=False)
@click.option("-n", "--namespace", default=None, help="Only pools of this namespace.")
@click.option(
    "--url",
    default=DEFAULT_STATUS_URL,
    show_default=True,
    help="The operator's metrics port (serves /debug/connections and /metrics).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the raw snapshot as JSON.")
def status(pool: str | None, namespace: str | None, url: str, as_json: bool) -> None:
    """Per pool: the API connection quota, running and queued connections, agents, steps."""
    from agentpool import status as pool_status  # noqa: PLC0415

    try:
        snapshot = pool_status.fetch(url)
    except pool_status.Unreachable as error:
        raise click.ClickException(str(error)) from None
    snapshot = pool_status.select(snapshot, pool=pool, namespace=namespace)
    if as_json:
        click.echo(pool_status.to_json(snapshot))
        return
    pool_status.print_snapshot(snapshot)
    if (pool or namespace) and not snapshot.pools:
        raise click.ClickException("no such pool is served by this operator")


# --- agentpool logs ------------------------------------------------------------------------


@main.command()
@click.argument("step")
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option("--kubeconfig", default=None, help="Kubeconfig file (default: the usual lookup).")
@click.option(
    "--agent-state-dir",
    envvar="AGENTPOOL_AGENT_STATE_DIR",
    default=Config().agent_state_dir,
    show_default=True,
    help="The operator's agent state directory, where steps keep their output "
    "[env: AGENTPOOL_AGENT_STATE_DIR].",
)
def logs(step: str, namespace: str, kubeconfig: str | None, agent_state_dir: str) -> None:
    """Print the whole output of BuildStep STEP (status.logTail keeps only its end)."""
    from agentpool.steps.logs import LogUnavailable  # noqa: PLC0415

    try:
        asyncio.run(_print_step_log(namespace, step, kubeconfig, agent_state_dir))
    except LogUnavailable as error:
        raise click.ClickException(str(error)) from None


async def _print_step_log(
    namespace: str, step: str, kubeconfig: str | None, state_dir: str
) -> None:
    from kubernetes_asyncio.client.exceptions import ApiException  # noqa: PLC0415

    from agentpool.kube import client as kube  # noqa: PLC0415
    from agentpool.steps.logs import read_step_log  # noqa: PLC0415

    out = sys.stdout.buffer
    clients = await kube.connect(kubeconfig)
    try:
        await read_step_log(
            clients.api, clients.exec, namespace, step, out.write, state_dir=state_dir
        )
    except ApiException as error:
        if error.status == 404:
            raise click.ClickException(f"BuildStep {namespace}/{step} not found") from None
        raise
    finally:
        out.flush()
        await clients.close()


# --- agentpool demo ------------------------------------------------------------------------


@main.command()
@click.option(
    "--examples",
    "examples_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Manifests to apply (default: the repository's examples/).",
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
    from agentpool.demo import run as run_demo  # noqa: PLC0415

    ok = run_demo(examples_dir, timeout=timeout)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
