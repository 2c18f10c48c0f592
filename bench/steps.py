"""Build steps benchmark: batched exec sessions against the one-exec-per-step baseline.

One run measures both modes with the same code: for each mode a fresh sandbox (child process)
and a fresh operator (`batching` off, then on), the same pools and the same workloads, with
the sandbox's counters reset before each workload. Nothing is compared across runs.

Workloads (trivial steps run `true`):
- chain: one build of 20 successive steps on one warm agent -> exec sessions opened (a);
- latency: steps of one build submitted one after another, each when the previous finished,
  on a warm agent -> dispatch latency, client's create call to status.startedAt (d);
- steady: 40 builds x 10 steps on 4 warm agents, all submitted at once -> operator API
  requests per step (b) and throughput (e);
- quota: 100 builds x 10 steps on 4 warm agents with apiConnections.max 4 -> the pool's peak
  concurrent connections held by the operator, and every step Succeeded (c).

The operator runs with a build grace of 0.2 s in both modes: the submitter sends all steps of
a build at once, so holding an agent a full second after a build's last step would only make
the other builds wait.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.harness import (
    AGENTPOOLS,
    BUILDSTEPS,
    OPERATOR_CLIENT,
    BenchClient,
    PoolWatch,
    StatsView,
    StepWatch,
    operator_config,
    parse_time,
    percentile,
    processes_under,
    running_operator,
    sandbox_process,
    step_body,
    warm_pool_body,
)
from bench.report import Benchmark, Row, publish, section_heading

NAME = "steps"
COMMAND = "make bench  # or: .venv/bin/python -m bench steps"
TIME_SCALE = 0.1  # kubelet profiles at a tenth of their duration: agents warm up quickly
BUILD_GRACE = 0.2
QUOTA_MAX = 4
WARM_WITHIN = 60.0


@dataclass(frozen=True)
class Scale:
    chain_steps: int = 20
    latency_steps: int = 100
    steady_builds: int = 4
    steady_steps: int = 50
    quota_builds: int = 100
    quota_steps: int = 10
    agents: int = 4

    @classmethod
    def quick(cls) -> Scale:
        """A smoke run of the same workloads, for checking the harness."""
        return cls(latency_steps=20, steady_steps=20, quota_builds=12)


@dataclass
class Workload:
    """What one workload measured in one mode."""

    steps: int
    succeeded: int
    seconds: float
    exec_opened: int
    operator_requests: int
    requests_by_resource: dict[str, int]
    pool_peak: int
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def all_succeeded(self) -> bool:
        return self.succeeded == self.steps

    @property
    def requests_per_step(self) -> float:
        return self.operator_requests / self.steps if self.steps else 0.0

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.seconds if self.seconds > 0 else 0.0

    def latency(self, fraction: float) -> float:
        return percentile(self.latencies_ms, fraction)

    def summary(self) -> dict[str, Any]:
        document = asdict(self)
        document.pop("latencies_ms")
        document |= {
            "allSucceeded": self.all_succeeded,
            "requestsPerStep": round(self.requests_per_step, 3),
            "stepsPerSecond": round(self.steps_per_second, 2),
        }
        if self.latencies_ms:
            document["latencyMs"] = {
                "p50": round(self.latency(0.5), 2),
                "p99": round(self.latency(0.99), 2),
                "max": round(max(self.latencies_ms), 2),
                "samples": len(self.latencies_ms),
            }
        return document


# --- one mode --------------------------------------------------------------------------------


class ModeRun:
    """The workloads of one mode, against one sandbox and one operator."""

    def __init__(self, client: BenchClient, steps: StepWatch, scale: Scale) -> None:
        self.client = client
        self.watch = steps
        self.scale = scale
        self.created_at: dict[str, float] = {}

    async def create(self, names_and_bodies: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """Create steps concurrently (the client's connection limit bounds it)."""

        async def one(name: str, body: dict[str, Any]) -> None:
            self.created_at[name] = time.time()
            await self.client.create(BUILDSTEPS, body)

        await asyncio.gather(*(one(n, b) for n, b in names_and_bodies))

    async def measure(
        self, pool: str, names: Sequence[str], started: float, within: float
    ) -> Workload:
        statuses = await self.watch.wait_final(names, within)
        stats: StatsView = await self.client.stats()
        finished = [parse_time(s.get("finishedAt")) for s in statuses.values()]
        end = max((f.timestamp() for f in finished if f is not None), default=time.time())
        return Workload(
            steps=len(names),
            succeeded=sum(s.get("phase") == "Succeeded" for s in statuses.values()),
            seconds=max(0.0, end - started),
            exec_opened=stats.exec_opened(pool),
            operator_requests=stats.requests(OPERATOR_CLIENT),
            requests_by_resource=stats.requests_by_resource(OPERATOR_CLIENT),
            pool_peak=stats.pool_peak(pool, OPERATOR_CLIENT),
            latencies_ms=self.latencies(statuses),
        )

    def latencies(self, statuses: dict[str, dict[str, Any]]) -> list[float]:
        found = []
        for name, status in statuses.items():
            started = parse_time(status.get("startedAt"))
            if started is not None and name in self.created_at:
                found.append((started.timestamp() - self.created_at[name]) * 1000.0)
        return found

    async def batch(self, pool: str, builds: int, steps: int, within: float) -> Workload:
        """`builds` builds of `steps` steps each, all submitted at once."""
        await self.client.reset_stats()
        work = [
            (f"{pool}-{b}-{i}", step_body(f"{pool}-{b}-{i}", pool, f"{pool}-{b}", i))
            for b in range(builds)
            for i in range(steps)
        ]
        started = time.time()
        await self.create(work)
        return await self.measure(pool, [n for n, _ in work], started, within)

    async def one_by_one(self, pool: str, count: int, within: float) -> Workload:
        """Steps of one build, each submitted when the previous one has finished."""
        await self.client.reset_stats()
        names = [f"{pool}-{i}" for i in range(count)]
        started = time.time()
        for order, name in enumerate(names):
            await self.create([(name, step_body(name, pool, pool, order))])
            await self.watch.wait_final([name], within)
        return await self.measure(pool, names, started, within)


@dataclass
class ModeResult:
    workloads: dict[str, Workload]
    # Step keeper processes still alive once every step had finished and the operator stopped.
    leftover_keepers: int


async def run_mode(batching: bool, scale: Scale, workdir: Path) -> ModeResult:
    """Fresh sandbox + operator in this mode; every workload, in order."""
    pools = {
        "chain": warm_pool_body("chain", 1),
        "latency": warm_pool_body("latency", 1),
        "steady": warm_pool_body("steady", scale.agents),
        "quota": warm_pool_body(
            "quota",
            scale.agents,
            # A long queue timeout: this workload measures the cap, not the timeout.
            apiConnections={"max": QUOTA_MAX, "queueTimeout": "5m"},
        ),
    }
    state_dir = workdir / ("batching" if batching else "baseline")
    async with (
        sandbox_process(state_dir, TIME_SCALE) as cluster,
        BenchClient(cluster) as client,
        StepWatch(client) as steps,
        PoolWatch(client) as pool_watch,
    ):
        config = operator_config(cluster, batching=batching, build_grace=BUILD_GRACE)
        async with running_operator(config):
            for body in pools.values():
                await client.create(AGENTPOOLS, body)
            await pool_watch.wait_idle(
                {name: body["spec"]["minIdle"] for name, body in pools.items()}, WARM_WITHIN
            )
            run = ModeRun(client, steps, scale)
            results = {
                "chain": await run.batch("chain", 1, scale.chain_steps, within=60),
                "latency": await run.one_by_one("latency", scale.latency_steps, within=60),
                "steady": await run.batch(
                    "steady", scale.steady_builds, scale.steady_steps, within=300
                ),
                "quota": await run.batch(
                    "quota", scale.quota_builds, scale.quota_steps, within=600
                ),
            }
        leftovers = processes_under(state_dir, ".keeper-")
    return ModeResult(results, len(leftovers))


# --- comparison ------------------------------------------------------------------------------


def _ms(value: float) -> str:
    return f"{value:.1f} ms"


def compare(baseline: ModeResult, batching: ModeResult, scale: Scale) -> list[Row]:
    b, c = baseline.workloads, batching.workloads
    ratio = (
        c["steady"].steps_per_second / b["steady"].steps_per_second
        if b["steady"].steps_per_second
        else 0.0
    )
    quota_steps = scale.quota_builds * scale.quota_steps
    return [
        Row(
            f"(a) exec sessions for a build of {scale.chain_steps} steps",
            str(b["chain"].exec_opened),
            str(c["chain"].exec_opened),
            "<= 1 (baseline 20)",
            c["chain"].exec_opened <= 1,
        ),
        Row(
            "(b) operator API requests per step (steady, warm agents)",
            f"{b['steady'].requests_per_step:.2f}",
            f"{c['steady'].requests_per_step:.2f}",
            "<= 3",
            c["steady"].requests_per_step <= 3,
        ),
        Row(
            f"(c) peak connections, pool max {QUOTA_MAX} ({quota_steps} steps)",
            str(b["quota"].pool_peak),
            str(c["quota"].pool_peak),
            f"<= {QUOTA_MAX}",
            b["quota"].pool_peak <= QUOTA_MAX and c["quota"].pool_peak <= QUOTA_MAX,
        ),
        Row(
            "(c) steps Succeeded",
            f"{b['quota'].succeeded}/{b['quota'].steps}",
            f"{c['quota'].succeeded}/{c['quota'].steps}",
            "all",
            b["quota"].all_succeeded and c["quota"].all_succeeded,
        ),
        Row(
            "(c) exec sessions opened",
            str(b["quota"].exec_opened),
            str(c["quota"].exec_opened),
        ),
        Row(
            "(d) dispatch latency p50 (warm agent)",
            _ms(b["latency"].latency(0.5)),
            _ms(c["latency"].latency(0.5)),
            "< 50 ms",
            c["latency"].latency(0.5) < 50,
        ),
        Row(
            "(d) dispatch latency p99 (warm agent)",
            _ms(b["latency"].latency(0.99)),
            _ms(c["latency"].latency(0.99)),
            "< 250 ms",
            c["latency"].latency(0.99) < 250,
        ),
        Row(
            f"(e) throughput, {scale.steady_builds} builds x {scale.steady_steps} steps",
            f"{b['steady'].steps_per_second:.1f} steps/s",
            f"{c['steady'].steps_per_second:.1f} steps/s",
            "ratio >= 10x",
            ratio >= 10,
        ),
        Row("(e) throughput ratio", "1x", f"{ratio:.1f}x"),
        Row(
            f"(e) throughput, quota max {QUOTA_MAX}",
            f"{b['quota'].steps_per_second:.1f} steps/s",
            f"{c['quota'].steps_per_second:.1f} steps/s",
        ),
        Row(
            "dispatch latency p50 / p99 under load (steady)",
            f"{_ms(b['steady'].latency(0.5))} / {_ms(b['steady'].latency(0.99))}",
            f"{_ms(c['steady'].latency(0.5))} / {_ms(c['steady'].latency(0.99))}",
        ),
        Row(
            "step keeper processes left after all steps finished",
            str(baseline.leftover_keepers),
            str(batching.leftover_keepers),
            "0",
            baseline.leftover_keepers == 0 and batching.leftover_keepers == 0,
        ),
    ]


def correctness_failures(results: dict[str, ModeResult]) -> list[str]:
    """What must hold in both modes whatever the speed: every step ran and the cap held."""
    failures = []
    for mode, result in results.items():
        workloads = result.workloads
        for name, workload in workloads.items():
            if not workload.all_succeeded:
                failures.append(
                    f"{mode}/{name}: {workload.succeeded}/{workload.steps} steps Succeeded"
                )
        if workloads["quota"].pool_peak > QUOTA_MAX:
            failures.append(
                f"{mode}/quota: peak {workloads['quota'].pool_peak} connections "
                f"> apiConnections.max {QUOTA_MAX}"
            )
    return failures


COLUMNS = ("figure", "batching off (baseline)", "batching on")
BENCHMARK = Benchmark(NAME, COMMAND, "Build steps: batching off vs on (one run)", COLUMNS)


def _doc_section(rows: list[Row], scale: Scale, seconds: float) -> str:
    return f"""{section_heading(BENCHMARK, "Build steps", rows, seconds)}
How it is measured, in one run with the same code: for each mode a fresh sandbox (in a child
process) and a fresh in-process operator (`--no-batching`: one exec session per step, held
for the whole step, as the Jenkins plugin does; then `--batching`), the same pools and
workloads, and the sandbox's counters reset before each workload. Counts are the sandbox's,
filtered by the operator's User-Agent (`{OPERATOR_CLIENT}`), so the benchmark's own requests
(creating steps, watching them) are left out. Trivial steps run `true`.

- (a) one build of {scale.chain_steps} steps created together on one warm agent.
- (b), (e) {scale.steady_builds} builds x {scale.steady_steps} steps on {scale.agents} warm
  agents (one build per agent: steady state, no agent hand-over), all created at once;
  requests include every operator request in that window (step
  status writes, exec sessions, pool status, Events). Throughput is steps / (last
  `finishedAt` - first create call).
- (c) {scale.quota_builds} builds x {scale.quota_steps} steps on {scale.agents} warm agents of
  a pool with `apiConnections.max: {QUOTA_MAX}` (`queueTimeout: 5m`); the peak is the
  sandbox's count of concurrent requests and exec WebSockets the operator held for that pool.
- (d) {scale.latency_steps} steps of one build, each created when the previous one had
  finished; latency is the client's create call to `status.startedAt` (microseconds; same
  clock). With batching, these steps join the build's open session.
- The operator runs with `buildGrace` 0.2 s in both modes (all steps of a build are
  submitted at once); kubelet profiles run at a tenth of their duration so agents warm up
  fast. Everything shares 2 cores with the sandbox's shells: treat figures as +-20 %.
"""


async def run(out: Path) -> dict[str, Any]:
    """Run the benchmark, print the table, write `<out>/steps.json` and the docs section."""
    return await run_scaled(out, Scale())


async def run_scaled(out: Path, scale: Scale, write_doc: bool = True) -> dict[str, Any]:
    begin = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="agentpool-bench-") as workdir:
        baseline = await run_mode(False, scale, Path(workdir))
        batching = await run_mode(True, scale, Path(workdir))
    seconds = time.monotonic() - begin
    results = {"baseline": baseline, "batching": batching}
    rows = compare(baseline, batching, scale)
    failures = correctness_failures(results)
    summary: dict[str, Any] = {
        "settings": {
            "timeScale": TIME_SCALE,
            "buildGrace": BUILD_GRACE,
            "quotaMax": QUOTA_MAX,
        },
        "modes": {
            mode: {
                "workloads": {name: w.summary() for name, w in result.workloads.items()},
                "leftoverKeepers": result.leftover_keepers,
            }
            for mode, result in results.items()
        },
    }
    section = _doc_section(rows, scale, seconds) if write_doc else None
    return publish(
        BENCHMARK, rows, failures, summary, seconds=seconds, scale=scale, out=out, section=section
    )
