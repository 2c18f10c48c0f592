"""`agentpool run|status|logs|build`: the operator's command line (+ `sandbox`, `demo`).

Thin on purpose: each command parses its options and calls into a module. Everything heavy
(kopf, the API client) is imported inside the command that needs it, so that `agentpool run`
starts and `agentpool status` answers quickly. `agentpool sandbox` and `agentpool demo` belong to
the sandbox distribution (agentpool-sandbox), a development tool the operator never imports:
they are found through the entry point group `agentpool.commands`, and without that
distribution they still exist and say in one line what to install.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import os
import sys
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import click

from agentpool import __version__
from agentpool.config import SETTINGS, Config, ConfigError, Setting

__all__ = ["config_from", "main"]

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_STATUS_URL = "http://127.0.0.1:9090"
ALL_NAMESPACES = "all_namespaces"


# Other distributions add commands through this entry point group; the sandbox distribution
# adds `sandbox` and `demo`. Those two are listed here so that they exist without it and say
# what to install, where click would say "No such command" (the demo is `make demo`'s command).
COMMANDS_GROUP = "agentpool.commands"
SANDBOX_COMMANDS = {
    "sandbox": "Serve a local Kubernetes API and simulated kubelet (development only).",
    "demo": "Sandbox, CRDs, operator and examples/ in one go (what `make demo` runs).",
}
INSTALL_SANDBOX = "pip install ./sandbox from a clone of the repository"
# As click's usage errors: the command cannot run as asked; 1 stays "ran and failed".
NOT_INSTALLED_EXIT_CODE = 2


class _Commands(click.Group):
    """The operator's own commands, then those installed distributions provide."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        plugged = {entry.name for entry in importlib.metadata.entry_points(group=COMMANDS_GROUP)}
        return sorted({*super().list_commands(ctx), *plugged, *SANDBOX_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        # The operator's own commands first: `agentpool run` never scans the installed
        # distributions, and no plug-in can replace one of them.
        own = super().get_command(ctx, cmd_name)
        if own is not None:
            return own
        for entry in importlib.metadata.entry_points(group=COMMANDS_GROUP, name=cmd_name):
            command = entry.load()
            if not isinstance(command, click.Command):
                raise click.ClickException(
                    f"entry point {entry.value} ({COMMANDS_GROUP}) is not a click command"
                )
            return command
        if cmd_name in SANDBOX_COMMANDS:
            return _not_installed(cmd_name)
        return None


def _not_installed(name: str) -> click.Command:
    """`agentpool NAME` without the sandbox distribution: one line, exit code 2, any arguments."""

    def say_what_to_install() -> None:
        click.echo(
            f"agentpool {name} needs the sandbox distribution (agentpool-sandbox): "
            f"{INSTALL_SANDBOX}",
            err=True,
        )
        click.get_current_context().exit(NOT_INSTALLED_EXIT_CODE)

    return click.Command(
        name,
        callback=say_what_to_install,
        help=f"{SANDBOX_COMMANDS[name]} Not installed: {INSTALL_SANDBOX}.",
        short_help=f"[not installed] {SANDBOX_COMMANDS[name]}",
        # Whatever options the real command takes, the answer is the same line.
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
        add_help_option=False,
    )


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
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


# --- agentpool logs and agentpool build: shared options ------------------------------------

NO_CLUSTER_HINT = "give --kubeconfig, set KUBECONFIG, or run inside a cluster"
CLI_USER_AGENT = f"agentpool-cli/{__version__}"


def _cluster_options(command: F) -> F:
    """-n/--namespace, --kubeconfig and --context, as kubectl names them."""
    command = click.option(
        "--context", default=None, help="Kubeconfig context (default: the current one)."
    )(command)
    command = click.option(
        "--kubeconfig", default=None, help="Kubeconfig file (default: the usual lookup)."
    )(command)
    return click.option("-n", "--namespace", default="default", show_default=True)(command)


def _state_dir_option(command: F) -> F:
    return click.option(
        "--agent-state-dir",
        envvar="AGENTPOOL_AGENT_STATE_DIR",
        default=Config().agent_state_dir,
        help="The operator's agent state directory, where steps keep their output; by "
        "default ${TMPDIR:-/tmp}/.agentpool in the agent container "
        "[env: AGENTPOOL_AGENT_STATE_DIR].",
    )(command)


def _write_stdout(data: bytes) -> None:
    out = sys.stdout.buffer
    out.write(data)
    out.flush()


def _note(text: str) -> None:
    click.echo(text, err=True)


Work = Callable[[Any], Awaitable[int]]
OnSignal = Callable[[Any, int], Awaitable[None]]


def _run_against_cluster(
    work: Work, kubeconfig: str | None, context: str | None, on_signal: OnSignal | None = None
) -> None:
    """Run `work(clients)` and exit with its code; errors become one line, never a traceback.

    SIGINT and SIGTERM stop the work; `on_signal` (e.g. cancelling a build) runs before the
    exit with 128 + the signal's number (130, 143).
    """
    try:
        code = asyncio.run(_against_cluster(work, kubeconfig, context, on_signal))
    except BrokenPipeError:
        # A reader such as `head` went away: the output is no longer wanted.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    sys.exit(code)


async def _against_cluster(
    work: Work, kubeconfig: str | None, context: str | None, on_signal: OnSignal | None
) -> int:
    import signal  # noqa: PLC0415

    import aiohttp  # noqa: PLC0415
    from kubernetes_asyncio.client.exceptions import ApiException  # noqa: PLC0415
    from kubernetes_asyncio.config import ConfigException  # noqa: PLC0415

    from agentpool.builds import ManifestError  # noqa: PLC0415
    from agentpool.follow import FollowError, StepNotFound, api_failure  # noqa: PLC0415
    from agentpool.kube import client as kube  # noqa: PLC0415
    from agentpool.pipeline import BuildNotFound  # noqa: PLC0415

    try:
        clients = await kube.connect(kubeconfig, context=context)
    except (ConfigException, FileNotFoundError) as error:
        raise click.ClickException(f"no cluster to talk to ({error}): {NO_CLUSTER_HINT}") from None
    # Audit logs and the sandbox's statistics tell the command line apart from the operator.
    clients.api.user_agent = clients.exec.user_agent = CLI_USER_AGENT
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    signalled: list[int] = []

    def stop(signum: int) -> None:
        if not signalled:
            signalled.append(signum)
            task.cancel()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop, signum)
    try:
        return await work(clients)
    except asyncio.CancelledError:
        if not signalled:
            raise
        task.uncancel()
        if on_signal is not None:
            await on_signal(clients, signalled[0])
        return 128 + signalled[0]
    except (StepNotFound, FollowError, BuildNotFound, ManifestError) as error:
        raise click.ClickException(str(error)) from None
    except ApiException as error:
        raise click.ClickException(api_failure(error)) from None
    except (aiohttp.ClientError, OSError) as error:
        if isinstance(error, BrokenPipeError):
            raise
        raise click.ClickException(f"cannot reach the API server: {error}") from None
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        await clients.close()


# --- agentpool logs ------------------------------------------------------------------------


@main.command()
@click.argument("step")
@click.option(
    "-f", "--follow", is_flag=True, help="Stream the output as it is printed, until the step ends."
)
@click.option(
    "--tail",
    type=int,
    default=-1,
    show_default=True,
    help="Lines of the end of the output to show first; -1 shows all.",
)
@_cluster_options
@_state_dir_option
def logs(
    *,
    step: str,
    follow: bool,
    tail: int,
    namespace: str,
    kubeconfig: str | None,
    context: str | None,
    agent_state_dir: str,
) -> None:
    """Print the output of BuildStep STEP (status.logTail keeps only its end).

    With -f, wait while the step is queued, stream its output as it is printed and end when
    the step is final, with a status line on stderr. When the agent is gone, print what the
    step's status still holds and say so.
    """
    from agentpool.builds import status_line  # noqa: PLC0415
    from agentpool.follow import StepFollower  # noqa: PLC0415

    lines = None if tail < 0 else tail

    async def work(clients: Any) -> int:
        follower = StepFollower(clients, namespace, _write_stdout, _note, state_dir=agent_state_dir)
        if follow:
            found = await follower.follow(step, tail=lines)
        else:
            found = await follower.print_log(step, tail=lines)
        if follow or not found.has_started:
            _note(status_line(found))
        return 0

    _run_against_cluster(work, kubeconfig, context)


# --- agentpool build -----------------------------------------------------------------------


@main.group()
def build() -> None:
    """Builds: the BuildSteps that share spec.build, run on one agent in spec.order."""


def _progress() -> Any:
    from agentpool.progress import make_progress  # noqa: PLC0415

    return make_progress()


def _read_manifests(filename: str) -> list[dict[str, Any]]:
    from agentpool.builds import ManifestError, parse_manifests  # noqa: PLC0415

    source = "stdin" if filename == "-" else filename
    try:
        text = sys.stdin.read() if filename == "-" else Path(filename).read_text()
        return parse_manifests(text, source)
    except (ManifestError, OSError, UnicodeDecodeError) as error:
        raise click.ClickException(str(error)) from None


async def _submit_and_follow(
    clients: Any,
    namespace: str,
    bodies: list[dict[str, Any]],
    *,
    follow: bool,
    state_dir: str,
    builds: list[str],
) -> int:
    from agentpool.builds import in_order  # noqa: PLC0415
    from agentpool.follow import StepFollower  # noqa: PLC0415
    from agentpool.pipeline import create_steps, show_build  # noqa: PLC0415

    created = await create_steps(clients, namespace, bodies)
    builds.extend(dict.fromkeys(s.build for s in created))
    if not follow:
        for created_step in created:
            click.echo(f"buildstep.agentpool.dev/{created_step.name} created")
        return 0
    names = ", ".join(builds)
    _note(f"build {names}: created {len(created)} steps in namespace {namespace}")
    progress = _progress()
    try:
        follower = StepFollower(
            clients, namespace, progress.output, progress.note, state_dir=state_dir
        )
        steps = in_order(created, given=[s.name for s in created])
        result = await show_build(follower, progress, steps, follow=True)
    finally:
        progress.close()
    if result.code == 0:
        _note(f"build {names} succeeded")
    else:
        _note(
            f"build {names} failed: step {result.step}: {result.explanation} (exit {result.code})"
        )
    return result.code


def _cancel_on_signal(namespace: str, builds: list[str]) -> OnSignal:
    async def cancel(clients: Any, signum: int) -> None:
        from agentpool.pipeline import CANCEL_WITHIN, cancel_builds  # noqa: PLC0415

        if not builds:
            return
        try:
            async with asyncio.timeout(CANCEL_WITHIN):
                cancelled = await cancel_builds(clients, namespace, builds)
        except Exception as error:  # the user must hear it, in one line
            _note(f"interrupted; cancelling build {', '.join(builds)} failed: {error}")
            return
        steps = ", ".join(cancelled) or "none left running"
        _note(f"interrupted: cancelled build {', '.join(builds)} (steps {steps})")

    return cancel


@build.command("run")
@click.option(
    "-f",
    "--filename",
    required=True,
    type=click.Path(exists=True, dir_okay=False, allow_dash=True),
    help="BuildStep manifests: multi-document YAML or a v1 List; - reads stdin.",
)
@click.option("--build", "build_name", default=None, help="Put every step in this build.")
@click.option("--no-follow", is_flag=True, help="Only create the steps and print their names.")
@_cluster_options
@_state_dir_option
def build_run(
    *,
    filename: str,
    build_name: str | None,
    no_follow: bool,
    namespace: str,
    kubeconfig: str | None,
    context: str | None,
    agent_state_dir: str,
) -> None:
    """Create the steps of FILE and show their output in order; exit as the build ended.

    Exits 0 when every step succeeded, with the first failed step's exit code when its script
    failed, 1 when a step failed for another reason (printed). Ctrl-C or SIGTERM cancels the
    build (annotation agentpool.dev/cancel) and exits 130 or 143.
    """
    from agentpool.builds import ManifestError, prepare_steps  # noqa: PLC0415

    ns_given = click.get_current_context().get_parameter_source("namespace")
    explicit = None if ns_given is click.core.ParameterSource.DEFAULT else namespace
    manifests = _read_manifests(filename)
    try:
        target, bodies = prepare_steps(manifests, namespace=explicit, build=build_name)
    except ManifestError as error:
        raise click.ClickException(str(error)) from None
    builds: list[str] = []

    async def work(clients: Any) -> int:
        return await _submit_and_follow(
            clients, target, bodies, follow=not no_follow, state_dir=agent_state_dir, builds=builds
        )

    _run_against_cluster(work, kubeconfig, context, _cancel_on_signal(target, builds))


@build.command("list")
@_cluster_options
def build_list(namespace: str, kubeconfig: str | None, context: str | None) -> None:
    """The builds of a namespace: pool, phase, steps done/total, agent, start, duration."""

    async def work(clients: Any) -> int:
        from agentpool.pipeline import build_table  # noqa: PLC0415

        table = await build_table(clients, namespace)
        if table is None:
            _note(f"No builds found in {namespace} namespace.")
        else:
            click.echo(table)
        return 0

    _run_against_cluster(work, kubeconfig, context)


@build.command("logs")
@click.argument("build_name", metavar="BUILD")
@click.option("-f", "--follow", is_flag=True, help="Follow the steps still to run or running.")
@_cluster_options
@_state_dir_option
def build_logs(
    *,
    build_name: str,
    follow: bool,
    namespace: str,
    kubeconfig: str | None,
    context: str | None,
    agent_state_dir: str,
) -> None:
    """The whole output of BUILD, step after step, each under a header."""

    async def work(clients: Any) -> int:
        from agentpool.follow import StepFollower  # noqa: PLC0415
        from agentpool.pipeline import build_steps, show_build  # noqa: PLC0415

        steps, _ = await build_steps(clients, namespace, build_name)
        progress = _progress()
        try:
            follower = StepFollower(
                clients, namespace, progress.output, progress.note, state_dir=agent_state_dir
            )
            await show_build(follower, progress, steps, follow=follow)
        finally:
            progress.close()
        return 0

    _run_against_cluster(work, kubeconfig, context)


@build.command("cancel")
@click.argument("build_name", metavar="BUILD")
@_cluster_options
def build_cancel(
    build_name: str, namespace: str, kubeconfig: str | None, context: str | None
) -> None:
    """Cancel BUILD: annotate its steps that are not final with agentpool.dev/cancel=true."""

    async def work(clients: Any) -> int:
        from agentpool.pipeline import cancel_build  # noqa: PLC0415

        cancelled = await cancel_build(clients, namespace, build_name)
        if cancelled:
            click.echo(f"build {build_name}: cancel requested for steps {', '.join(cancelled)}")
        else:
            click.echo(f"build {build_name}: every step is already final (or being cancelled)")
        return 0

    _run_against_cluster(work, kubeconfig, context)


@build.command("rerun")
@click.argument("build_name", metavar="BUILD")
@click.option(
    "--build",
    "new_build",
    default=None,
    help="Name of the new build (default: BUILD and a random suffix).",
)
@click.option("--no-follow", is_flag=True, help="Only create the steps and print their names.")
@_cluster_options
@_state_dir_option
def build_rerun(
    *,
    build_name: str,
    new_build: str | None,
    no_follow: bool,
    namespace: str,
    kubeconfig: str | None,
    context: str | None,
    agent_state_dir: str,
) -> None:
    """Run BUILD again, as a new build made from the specs of its steps; exit as `build run`."""
    from agentpool.pipeline import new_build_name  # noqa: PLC0415

    target = new_build or new_build_name(build_name)
    if target == build_name:
        raise click.UsageError("--build must differ from BUILD: a re-run is a new build")
    builds: list[str] = []

    async def work(clients: Any) -> int:
        from agentpool.builds import prepare_steps  # noqa: PLC0415
        from agentpool.pipeline import rerun_bodies  # noqa: PLC0415

        bodies = await rerun_bodies(clients, namespace, build_name, target)
        _, prepared = prepare_steps(bodies, namespace=namespace, build=None)
        return await _submit_and_follow(
            clients,
            namespace,
            prepared,
            follow=not no_follow,
            state_dir=agent_state_dir,
            builds=builds,
        )

    _run_against_cluster(work, kubeconfig, context, _cancel_on_signal(namespace, builds))


if __name__ == "__main__":
    main()
