"""`agentpool demo`: the whole product on one machine, in well under a minute.

Starts the sandbox cluster, installs the CRDs, starts the operator in this process, applies
`examples/`, shows the steps progress live and ends with a summary whose figures come from
the sandbox's own counters (`/sandbox/v1/stats`), i.e. measured from outside the operator.

What "behaved as designed" means is data in the examples: a BuildStep may carry the
annotations `demo.agentpool.dev/expect-phase` and `demo.agentpool.dev/expect-exit-code`;
without them a step is expected to succeed with exit code 0. The demo also expects fewer exec
sessions than steps run (batching) and a peak of API connections within the pool's quota.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import kopf
import yaml
from kubernetes_asyncio.client import ApiClient, ApiextensionsV1Api, CustomObjectsApi
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

import agentpool
from agentpool import USER_AGENT
from agentpool.config import Config
from agentpool.kube import client as kube
from agentpool.runtime import run_operator
from agentpool.status import steps_by_phase
from agentpool_sandbox.cluster import Sandbox

__all__ = ["Check", "Outcome", "StepResult", "judge", "run"]

# The operator's package ships the CRDs and examples (in a clone, its `crds` and `examples` are
# links to the repository's directories), so the demo runs from any directory once installed.
OPERATOR_PACKAGE = Path(agentpool.__file__).parent
NAMESPACE = "default"
DEMO_USER_AGENT = "agentpool-demo"
EXPECT_PHASE = "demo.agentpool.dev/expect-phase"
EXPECT_EXIT_CODE = "demo.agentpool.dev/expect-exit-code"
FINAL_PHASES = frozenset({"Succeeded", "Failed", "Skipped", "Cancelled"})
RAN_PHASES = frozenset({"Succeeded", "Failed"})
STARTUP_WITHIN = 20.0
STOP_WITHIN = 15.0
TEAR_DOWN_WITHIN = 10.0
POOL_LABEL = "agentpool.dev/pool"
REFRESH_SECONDS = 0.2
PHASE_STYLES = {
    "Succeeded": "green",
    "Failed": "red",
    "Skipped": "yellow",
    "Cancelled": "magenta",
    "Running": "cyan",
}


@dataclass(frozen=True)
class StepResult:
    """One BuildStep as the demo saw it at the end, with what the examples expect of it."""

    name: str
    build: str
    order: int
    phase: str
    exit_code: int | None
    agent: str | None
    expected_phase: str
    expected_exit_code: int | None

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> StepResult:
        meta = body.get("metadata") or {}
        spec = body.get("spec") or {}
        status = body.get("status") or {}
        annotations = meta.get("annotations") or {}
        expected_phase = str(annotations.get(EXPECT_PHASE, "Succeeded"))
        raw_code = annotations.get(EXPECT_EXIT_CODE)
        if raw_code is not None:
            expected_code: int | None = int(raw_code)
        else:
            expected_code = 0 if expected_phase == "Succeeded" else None
        code = status.get("exitCode")
        return cls(
            name=str(meta.get("name")),
            build=str(spec.get("build") or meta.get("name")),
            order=int(spec.get("order") or 0),
            phase=str(status.get("phase") or "Pending"),
            exit_code=code if isinstance(code, int) else None,
            agent=status.get("agent"),
            expected_phase=expected_phase,
            expected_exit_code=expected_code,
        )

    @property
    def as_designed(self) -> bool:
        if self.phase != self.expected_phase:
            return False
        return self.expected_exit_code is None or self.exit_code == self.expected_exit_code


@dataclass(frozen=True)
class Check:
    """One line of the verdict: `what` was expected; `detail` what was seen, if it adds to it."""

    what: str
    ok: bool
    detail: str


@dataclass
class Outcome:
    """Everything the summary reports; `checks` decide the exit code."""

    steps: list[StepResult]
    sessions: int
    peak_connections: int
    limit: int
    metrics_url: str
    metrics_sessions: int | None
    phases_in_metrics: dict[str, int]
    timed_out: bool = False
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)


def judge(outcome: Outcome) -> list[Check]:
    """The demo's verdict, check by check (pure: tests feed it made-up outcomes)."""
    checks: list[Check] = []
    if outcome.timed_out:
        unfinished = [s.name for s in outcome.steps if s.phase not in FINAL_PHASES]
        checks.append(
            Check("every step finished", False, "still running: " + ", ".join(unfinished))
        )
    for step in outcome.steps:
        expected = step.expected_phase + (
            f" (exit {step.expected_exit_code})" if step.expected_exit_code is not None else ""
        )
        got = step.phase + (f" (exit {step.exit_code})" if step.exit_code is not None else "")
        # The expectation is the check's text: repeat the observation only when it says more.
        detail = "" if got == expected else f"got {got}"
        checks.append(Check(f"{step.name} is {expected}", step.as_designed, detail))
    ran = sum(1 for s in outcome.steps if s.phase in RAN_PHASES)
    checks.append(
        Check(
            "fewer exec sessions than steps run",
            0 < outcome.sessions < ran,
            f"{outcome.sessions} sessions for {ran} steps",
        )
    )
    checks.append(
        Check(
            "peak API connections within the quota",
            outcome.peak_connections <= outcome.limit,
            f"peak {outcome.peak_connections}, limit {outcome.limit}",
        )
    )
    return checks


# --- rendering -----------------------------------------------------------------------------


def _steps_table(steps: Iterable[StepResult], *, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("Build", "Step", "Phase", "Exit", "Agent"):
        table.add_column(column)
    for step in sorted(steps, key=lambda s: (s.build, s.order, s.name)):
        table.add_row(
            step.build,
            step.name,
            Text(step.phase, style=PHASE_STYLES.get(step.phase, "")),
            "" if step.exit_code is None else str(step.exit_code),
            step.agent or "",
        )
    return table


def _progress(steps: list[StepResult], pool: dict[str, Any], elapsed: float) -> RenderableType:
    status = pool.get("status") or {}
    agents = status.get("agents") or {}
    api = status.get("apiConnections") or {}
    line = Text.assemble(
        (f"{elapsed:4.1f}s  ", "dim"),
        ("pool demo: ", "bold"),
        f"agents idle {agents.get('idle', 0)} busy {agents.get('busy', 0)} "
        f"starting {agents.get('starting', 0)}   ",
        f"API connections {api.get('running', 0)}/{api.get('limit', '?')} "
        f"(queued {api.get('queued', 0)})",
    )
    return Group(line, _steps_table(steps, title="BuildSteps"))


def _phases_text(phases: dict[str, int]) -> str:
    return ", ".join(f"{phase} {count}" for phase, count in sorted(phases.items())) or "none"


def summary(outcome: Outcome) -> RenderableType:
    ran = sum(1 for s in outcome.steps if s.phase in RAN_PHASES)
    by_phase: dict[str, int] = {}
    for step in outcome.steps:
        by_phase[step.phase] = by_phase.get(step.phase, 0) + 1
    phases = ", ".join(f"{count} {phase}" for phase, count in sorted(by_phase.items()))
    lines: list[RenderableType] = [
        Text(""),
        Text("Summary", style="bold underline"),
        _steps_table(outcome.steps, title=f"Steps by phase: {phases}"),
        Text.assemble(
            ("Exec sessions: ", "bold"),
            f"{outcome.sessions} opened for {ran} steps run "
            f"({len(outcome.steps) - ran} skipped) — steps of a build share one session "
            "(sandbox /sandbox/v1/stats)",
        ),
        Text.assemble(
            ("Peak API connections: ", "bold"),
            f"{outcome.peak_connections} of the pool's limit {outcome.limit} "
            "(spec.apiConnections.max; sandbox /sandbox/v1/stats)",
        ),
        Text.assemble(
            ("Metrics: ", "bold"),
            f"the operator served {outcome.metrics_url} while it ran "
            f"(agentpool_exec_sessions_total {outcome.metrics_sessions}, "
            f"agentpool_steps_total {_phases_text(outcome.phases_in_metrics)}). "
            "`agentpool run` serves them "
            "on :9090 with /debug/connections, which `agentpool status` reads; "
            "docs/operations.md lists them and docs/grafana/ has a dashboard.",
        ),
        Text(""),
    ]
    for check in outcome.checks:
        mark = Text("  ok  ", style="green") if check.ok else Text(" FAIL ", style="bold red")
        detail = (f"  — {check.detail}", "dim") if check.detail else ""
        lines.append(Text.assemble(mark, check.what, detail))
    verdict = (
        Text("\nThe demo behaved as designed.", style="bold green")
        if outcome.ok
        else Text("\nThe demo did NOT behave as designed (see FAIL above).", style="bold red")
    )
    lines.append(verdict)
    return Group(*lines)


# --- running -------------------------------------------------------------------------------


def _manifests(examples: Path) -> list[dict[str, Any]]:
    documents: list[dict[str, Any]] = []
    for path in sorted(examples.glob("*.yaml")):
        documents.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    # Pools first, so that steps never name a pool the operator has not seen yet.
    return sorted(documents, key=lambda d: d.get("kind") != "AgentPool")


def _crds(crds: Path) -> list[Any]:
    return [yaml.safe_load(path.read_text()) for path in sorted(crds.glob("*.yaml"))]


async def _install_crds(api: ApiClient, crds: list[Any]) -> None:
    extensions = ApiextensionsV1Api(api)
    for crd in crds:
        await extensions.create_custom_resource_definition(crd)


async def _apply(api: ApiClient, documents: list[dict[str, Any]]) -> None:
    objects = CustomObjectsApi(api)
    for document in documents:
        group, _, version = str(document["apiVersion"]).partition("/")
        plural = kube.AGENTPOOLS if document["kind"] == "AgentPool" else kube.BUILDSTEPS
        await objects.create_namespaced_custom_object(group, version, NAMESPACE, plural, document)


async def _get_json(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with session.get(url) as response:
        response.raise_for_status()
        body: dict[str, Any] = await response.json()
        return body


async def _get_text(session: aiohttp.ClientSession, url: str) -> str:
    async with session.get(url) as response:
        response.raise_for_status()
        return await response.text()


def _client_figure(section: dict[str, Any], key: str) -> int:
    """The operator's own share of a stats figure (the demo's requests are not its doing)."""
    return int(((section.get("byClient") or {}).get(USER_AGENT) or {}).get(key, 0))


class _Operator:
    """The operator, running in this event loop until `stop()`."""

    def __init__(self, config: Config) -> None:
        self.memo = kopf.Memo()
        self.stop_flag = asyncio.Event()
        self.ready_flag = asyncio.Event()
        self.task = asyncio.create_task(
            run_operator(
                config,
                stop_flag=self.stop_flag,
                ready_flag=self.ready_flag,
                memo=self.memo,
                metrics_host="127.0.0.1",
            ),
            name="agentpool-operator",
        )

    async def ready(self) -> None:
        waiter = asyncio.ensure_future(self.ready_flag.wait())
        async with asyncio.timeout(STARTUP_WITHIN):
            await asyncio.wait({waiter, self.task}, return_when=asyncio.FIRST_COMPLETED)
        if self.task.done():
            waiter.cancel()
            self.task.result()
            raise RuntimeError("the operator stopped during startup")

    @property
    def metrics_url(self) -> str:
        return f"{self.memo.runtime.telemetry.url}/metrics"

    async def stop(self) -> None:
        self.stop_flag.set()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            async with asyncio.timeout(STOP_WITHIN):
                await self.task
        if not self.task.done():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


async def _steps(api: ApiClient) -> list[StepResult]:
    bodies = await kube.list_objects(api, kube.BUILDSTEPS, NAMESPACE)
    return [StepResult.from_body(body) for body in bodies]


async def _demo(
    documents: list[dict[str, Any]], crds: list[Any], within: float, console: Console
) -> Outcome:
    pool_doc = next(d for d in documents if d.get("kind") == "AgentPool")
    pool_name = str(pool_doc["metadata"]["name"])
    pool_key = f"{NAMESPACE}/{pool_name}"
    limit = int(((pool_doc.get("spec") or {}).get("apiConnections") or {}).get("max", 32))

    with tempfile.TemporaryDirectory(prefix="agentpool-demo-") as state:
        async with Sandbox(state_dir=Path(state) / "sandbox") as sandbox:
            console.print(f"[bold]sandbox[/] API server at {sandbox.url}")
            api = kube.new_api_client(await kube.load_configuration(str(sandbox.kubeconfig_path)))
            api.user_agent = DEMO_USER_AGENT
            operator: _Operator | None = None
            try:
                await _install_crds(api, crds)
                console.print(f"[bold]crds[/] {len(crds)} CustomResourceDefinitions installed")
                config = Config(
                    namespaces=(NAMESPACE,),
                    metrics_port=0,
                    liveness_port=0,
                    standalone=True,
                    kubeconfig=str(sandbox.kubeconfig_path),
                )
                operator = _Operator(config)
                await operator.ready()
                console.print(f"[bold]operator[/] running; metrics at {operator.metrics_url}")
                await _apply(api, documents)
                console.print(
                    f"[bold]applied[/] {len(documents)} objects from the examples: "
                    f"pool {pool_name} and {len(documents) - 1} BuildSteps"
                )
                timed_out = await _follow(api, pool_name, within, console)
                steps = await _steps(api)
                async with aiohttp.ClientSession() as http:
                    stats = await _get_json(http, f"{sandbox.url}/sandbox/v1/stats")
                    metrics_text = await _get_text(http, operator.metrics_url)
            finally:
                try:
                    if operator is not None:
                        await _tear_down(api, pool_name)
                        await operator.stop()
                finally:
                    await api.close()

    exec_stats = (stats.get("exec") or {}).get("byPool", {}).get(pool_key) or {}
    pool_connections = (stats.get("connections") or {}).get("byPool", {}).get(pool_key) or {}
    outcome = Outcome(
        steps=steps,
        # Only the operator opens exec sessions in the demo.
        sessions=int(exec_stats.get("opened", 0)),
        peak_connections=_client_figure(pool_connections, "peak"),
        limit=limit,
        metrics_url=operator.metrics_url if operator else "",
        metrics_sessions=_metric_total(metrics_text, "agentpool_exec_sessions", pool_key),
        phases_in_metrics=steps_by_phase(metrics_text).get(pool_key, {}),
        timed_out=timed_out,
    )
    outcome.checks = judge(outcome)
    return outcome


async def _tear_down(api: ApiClient, pool_name: str) -> None:
    """Delete the pool and wait (bounded) until the operator has removed its agent pods.

    The sandbox kills what is left when it stops, but an orderly end is what a user's cluster
    would see, and it leaves no container process to race with the shutdown.
    """
    objects = CustomObjectsApi(api)
    with contextlib.suppress(Exception):
        await objects.delete_namespaced_custom_object(
            kube.GROUP, kube.VERSION, NAMESPACE, kube.AGENTPOOLS, pool_name
        )
    deadline = time.monotonic() + TEAR_DOWN_WITHIN
    while time.monotonic() < deadline:
        if not await kube.list_pods(api, NAMESPACE, f"{POOL_LABEL}={pool_name}"):
            return
        await asyncio.sleep(REFRESH_SECONDS)


def _metric_total(metrics_text: str, family_name: str, pool: str) -> int | None:
    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

    for family in text_string_to_metric_families(metrics_text):
        if family.name == family_name:
            for sample in family.samples:
                if sample.name.endswith("_total") and sample.labels.get("pool") == pool:
                    return int(sample.value)
    return None


async def _follow(api: ApiClient, pool_name: str, within: float, console: Console) -> bool:
    """Show progress until every step is final; True when `within` seconds ran out first."""
    started = time.monotonic()
    with Live(console=console, refresh_per_second=8, transient=True) as live:
        while True:
            steps = await _steps(api)
            pool = await kube.get_object(api, kube.AGENTPOOLS, NAMESPACE, pool_name)
            elapsed = time.monotonic() - started
            live.update(_progress(steps, pool, elapsed))
            if steps and all(step.phase in FINAL_PHASES for step in steps):
                return False
            if elapsed > within:
                return True
            await asyncio.sleep(REFRESH_SECONDS)


def run(
    examples: Path | None = None,
    *,
    timeout: float = 45.0,
    crds: Path | None = None,
    console: Console | None = None,
) -> bool:
    """Run the demo; True when it behaved as designed."""
    console = console or Console()
    examples = examples or OPERATOR_PACKAGE / "examples"
    crds = crds or OPERATOR_PACKAGE / "crds"
    for needed in (examples, crds):
        if not needed.is_dir():
            console.print(
                f"[red]{needed} is missing: reinstall agentpool-operator (its package ships "
                "the CRDs and examples), or give --examples"
            )
            return False
    # The operator's own log would drown the progress display; warnings still show.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    outcome = asyncio.run(_demo(_manifests(examples), _crds(crds), timeout, console))
    console.print(summary(outcome))
    return outcome.ok
