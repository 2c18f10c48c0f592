"""Agent startup on virtual kubelets: the readiness toleration on and off, side by side.

One run, one sandbox (child process), one operator, two AgentPools of the same size on the
`virtual-kubelet` profile (the JENKINS-68649 sequence: for 14 pods in 15 every container runs
while the pod phase is still `Pending`):

- `strict`: `readiness.tolerateVirtualKubeletPending: false`, i.e. demand phase `Running` as
  the Jenkins Kubernetes plugin did;
- `tolerant`: the default, started once every container runs.

Both pools ask for all their agents at once (`minIdle` = `maxAgents`). Every failure is a
false failure: the profile always ends `Running`. The run ends when the tolerant pool is
fully warm and the strict pool is too or has had its window (it keeps failing agents and
backing off, so it may never get there).

Figures: agents ready, false failures (failed launches), pods created (seen by a pod
watch), launches seen in the Pending window (the operator's counter), time to ready
(p50/p95/max: from the operator's first sight of the pod, its create response, to the moment
it judged the agent started; the API's timestamps have one-second resolution), and the
sandbox's counters for the operator's requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness import (
    AGENTPOOLS,
    GROUP_VERSION,
    NAMESPACE,
    BenchClient,
    BenchError,
    PoolWatch,
    StatsView,
    operator_config,
    percentile,
    running_operator,
    sandbox_process,
)
from bench.report import Benchmark, Row, publish, section_heading

NAME = "agents"
COMMAND = "make bench  # or: .venv/bin/python -m bench agents"
PROFILE = "virtual-kubelet"
TIME_SCALE = 1.0  # the profile is already the seed's ~80 s scaled to under a second
STRICT, TOLERANT = "strict", "tolerant"
LAUNCHES = "agentpool_agent_launches_total"
PENDING_WINDOW = "agentpool_agent_virtual_kubelet_pending_total"
POOL_LABEL = "agentpool.dev/pool"
COLUMNS = ("figure", "toleration off (Jenkins-like)", "toleration on (default)")
BENCHMARK = Benchmark(
    NAME,
    COMMAND,
    "Agent startup on virtual kubelets: toleration off vs on (one run)",
    COLUMNS,
)


@dataclass(frozen=True)
class Scale:
    agents: int = 100
    # How long the tolerant pool may take to warm up before the run is a failure.
    warm_within: float = 120.0
    # How long the strict pool gets after the tolerant one is warm.
    strict_window: float = 30.0

    @classmethod
    def quick(cls) -> Scale:
        return cls(agents=20, strict_window=10.0)


@dataclass(frozen=True)
class PoolFigures:
    """One pool's outcome."""

    ready: int
    false_failures: int
    pods_created: int
    pending_window: int
    seconds_to_ready: tuple[float, ...]
    peak_connections: int

    def summary(self) -> dict[str, Any]:
        times = self.seconds_to_ready
        return {
            "ready": self.ready,
            "falseFailures": self.false_failures,
            "podsCreated": self.pods_created,
            "pendingWindow": self.pending_window,
            "timeToReady": {
                "p50": percentile(times, 0.5),
                "p95": percentile(times, 0.95),
                "max": max(times, default=float("nan")),
            },
            "peakConnections": self.peak_connections,
        }


@dataclass(frozen=True)
class RunFigures:
    pools: dict[str, PoolFigures]
    operator_requests: int
    requests_by_resource: dict[str, int]
    tolerant_seconds: float
    strict_seconds: float


def pool_body(name: str, agents: int, *, tolerate: bool) -> dict[str, Any]:
    return {
        "apiVersion": GROUP_VERSION,
        "kind": "AgentPool",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            # No command: the sandbox runs no process, the profile alone drives the status.
            "template": {
                "metadata": {"annotations": {"sandbox.agentpool.dev/profile": PROFILE}},
                "spec": {"containers": [{"name": "agent", "image": "busybox:1.36"}]},
            },
            "agentContainer": "agent",
            "minIdle": agents,
            "maxAgents": agents,
            "readiness": {"tolerateVirtualKubeletPending": tolerate},
        },
    }


class PodNames:
    """Names of every agent pod created, per pool, from a watch of the API server's pods."""

    def __init__(self, client: BenchClient) -> None:
        self.client = client
        self.by_pool: dict[str, set[str]] = {}
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> PodNames:
        path = f"/api/v1/namespaces/{NAMESPACE}/pods"
        listing = await self.client.request("GET", f"{path}?labelSelector={POOL_LABEL}")
        self._task = asyncio.create_task(self._follow(path, listing["metadata"]["resourceVersion"]))
        return self

    async def _follow(self, path: str, version: str) -> None:
        query = {"watch": "true", "resourceVersion": version, "labelSelector": POOL_LABEL}
        async with self.client.http.get(path, params=query) as response:
            async for line in response.content:
                pod = json.loads(line)["object"]
                labels = (pod.get("metadata") or {}).get("labels") or {}
                if POOL_LABEL in labels:
                    self.by_pool.setdefault(labels[POOL_LABEL], set()).add(pod["metadata"]["name"])

    async def __aexit__(self, *_: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def created(self, pool: str) -> int:
        return len(self.by_pool.get(pool, ()))


def startup_seconds(memo: Any, pool: str) -> tuple[float, ...]:
    """Per started agent: the operator's first sight of the pod to its readiness verdict."""
    controller = memo.runtime.pools.controller(f"{NAMESPACE}/{pool}")
    if controller is None:
        return ()
    return tuple(
        sorted(
            (r.ready_at - r.first_seen).total_seconds()
            for r in controller.records.values()
            if r.ready_at is not None
        )
    )


def operator_count(memo: Any, metric: str, pool: str, **labels: str) -> int:
    """A counter of the operator's metrics catalogue for `pool`."""
    value = memo.runtime.metrics.registry.get_sample_value(
        metric, {"pool": f"{NAMESPACE}/{pool}", **labels}
    )
    return int(value or 0)


async def measure(scale: Scale, workdir: Path) -> RunFigures:
    async with (
        sandbox_process(workdir / "sandbox", TIME_SCALE) as cluster,
        BenchClient(cluster) as client,
        PoolWatch(client) as pools,
        PodNames(client) as pods,
        running_operator(operator_config(cluster)) as memo,
    ):
        await client.reset_stats()
        begin = time.monotonic()
        await client.create(AGENTPOOLS, pool_body(STRICT, scale.agents, tolerate=False))
        await client.create(AGENTPOOLS, pool_body(TOLERANT, scale.agents, tolerate=True))
        await pools.wait_idle({TOLERANT: scale.agents}, scale.warm_within)
        tolerant_seconds = time.monotonic() - begin
        # Expected to time out: the strict pool fails most agents and backs off.
        with contextlib.suppress(BenchError):
            await pools.wait_idle({STRICT: scale.agents}, scale.strict_window)
        strict_seconds = time.monotonic() - begin
        stats = await client.stats()
        figures = {
            name: PoolFigures(
                ready=pools.idle(name),
                false_failures=operator_count(memo, LAUNCHES, name, result="failed"),
                pods_created=pods.created(name),
                pending_window=operator_count(memo, PENDING_WINDOW, name),
                seconds_to_ready=startup_seconds(memo, name),
                peak_connections=stats.pool_peak(name),
            )
            for name in (STRICT, TOLERANT)
        }
    return RunFigures(
        pools=figures,
        operator_requests=stats.requests(),
        requests_by_resource=_top(stats),
        tolerant_seconds=tolerant_seconds,
        strict_seconds=strict_seconds,
    )


def _top(stats: StatsView) -> dict[str, int]:
    return dict(sorted(stats.requests_by_resource().items(), key=lambda kv: -kv[1])[:8])


def _s(value: float) -> str:
    return f"{value:.2f} s"


def compare(run: RunFigures, scale: Scale) -> list[Row]:
    s, t = run.pools[STRICT], run.pools[TOLERANT]
    n = scale.agents

    def times(fraction: float | None, figures: PoolFigures) -> str:
        values = figures.seconds_to_ready
        if not values:
            return "-"
        return _s(max(values) if fraction is None else percentile(values, fraction))

    return [
        Row(
            f"agents ready (of {n})",
            f"{s.ready} after {run.strict_seconds:.0f} s",
            f"{t.ready} after {run.tolerant_seconds:.1f} s",
            f"{n}",
            t.ready == n,
        ),
        Row(
            "false failures (launches failed)",
            str(s.false_failures),
            str(t.false_failures),
            "0",
            (t.false_failures == 0),
        ),
        Row(
            "agent pods created",
            str(s.pods_created),
            str(t.pods_created),
            f"{n}",
            (t.pods_created == n),
        ),
        Row(
            "launches accepted in the Pending window",
            str(s.pending_window),
            str(t.pending_window),
        ),
        Row("time to ready p50", times(0.5, s), times(0.5, t)),
        Row("time to ready p95", times(0.95, s), times(0.95, t)),
        Row("time to ready max", times(None, s), times(None, t)),
    ]


def correctness_failures(run: RunFigures, scale: Scale) -> list[str]:
    """What the toleration must guarantee, whatever the speed."""
    t = run.pools[TOLERANT]
    failures = []
    if t.ready != scale.agents:
        failures.append(f"tolerant: {t.ready}/{scale.agents} agents ready")
    if t.false_failures:
        failures.append(f"tolerant: {t.false_failures} agents failed on a virtual kubelet")
    return failures


def _doc_section(rows: list[Row], run: RunFigures, scale: Scale, seconds: float) -> str:
    requests = ", ".join(f"{k} {v}" for k, v in run.requests_by_resource.items())
    heading = section_heading(BENCHMARK, "Agent startup on virtual kubelets", rows, seconds)
    return f"""{heading}
How it is measured, in one run: one sandbox (child process) and one operator, two pools of
{scale.agents} agents each on the `{PROFILE}` kubelet profile (the JENKINS-68649 sequence
scaled from about 80 s to under a second; for 14 pods in 15 every container runs while the
phase still says `Pending`), created together with `minIdle` = `maxAgents` = {scale.agents}.
The left pool sets `readiness.tolerateVirtualKubeletPending: false` (phase `Running`
required, as the Jenkins Kubernetes plugin did); the right one keeps the default. Every
failure is false: the profile always ends `Running`. The strict pool gets
{scale.strict_window:.0f} s after the tolerant one is warm; it fails agents, replaces them,
and backs off after repeated launch failures, so it does not get there. Both pools share
the operator, the sandbox and 2 cores: the strict pool's churn of created and deleted pods
lengthens the tolerant pool's times too (the profile itself runs the containers 0.4 s after
creation).

Agents ready are the pool's `status.agents.idle`; pods created are the distinct agent pods
a watch of the API server saw; failures are the operator's
`agentpool_agent_launches_total{{result="failed"}}`; time to ready runs from the operator's
first sight of the pod (its create response) to its readiness verdict (Kubernetes timestamps
have one-second resolution). The operator sent {run.operator_requests} requests in the run
(both pools; the sandbox's count), most of them: {requests}.
"""


async def run(out: Path) -> dict[str, Any]:
    """Run the benchmark, print the table, write `<out>/agents.json` and the docs section."""
    return await run_scaled(out, Scale())


async def run_scaled(out: Path, scale: Scale, write_doc: bool = True) -> dict[str, Any]:
    begin = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="agentpool-bench-") as workdir:
        figures = await measure(scale, Path(workdir))
    seconds = time.monotonic() - begin
    rows = compare(figures, scale)
    failures = correctness_failures(figures, scale)
    summary: dict[str, Any] = {
        "settings": {"timeScale": TIME_SCALE, "profile": PROFILE},
        "pools": {name: pool.summary() for name, pool in figures.pools.items()},
        "operatorRequests": figures.operator_requests,
        "requestsByResource": figures.requests_by_resource,
    }
    section = _doc_section(rows, figures, scale, seconds) if write_doc else None
    return publish(
        BENCHMARK, rows, failures, summary, seconds=seconds, scale=scale, out=out, section=section
    )


if __name__ == "__main__":
    import sys

    quick = "--quick" in sys.argv
    result = asyncio.run(
        run_scaled(Path(tempfile.mkdtemp()), Scale.quick(), write_doc=False)
        if quick
        else run(Path(__file__).parent / "results")
    )
    sys.exit(1 if result["failures"] else 0)
