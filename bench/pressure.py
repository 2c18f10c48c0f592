"""The operator under API pressure: the seed's situation, measured from the API server's side.

One run, every configuration side by side: each gets a fresh sandbox (child process) and a
fresh operator, the same code path, and the sandbox's counters reset before its workload, so
nothing is compared across runs. Counts are the sandbox's, filtered by the operator's
User-Agent. Trivial steps run `true`.

Workloads:
1. seed: one pool of `agents` warm agents (`minIdle` = `maxAgents`), `builds` builds of
   `steps` steps all submitted at once, at `apiConnections.max` `tight_max` (fewer connections
   than agents, the seed's situation) and `loose_max`, each with batching on and off: exec
   sessions per build, operator requests per step, the pool's peak concurrent connections,
   steps Succeeded, throughput and the tight/loose throughput ratio.
2. mixed: the seed's workload at `tight_max` with batching, where a share of the builds has one
   `sleep long_seconds` step: the longest queue wait of a build (first step created -> its
   `startedAt`), sessions per build for short and long builds, throughput.
3. exec cost: `cost_agents` builds of `cost_steps` steps on as many agents with the sandbox's
   exec latency fault (exec verb only, set once the agents are warm) at each of
   `cost_latencies_ms`, batching on and off: throughput and the on/off ratio.
4. scale: `big_builds` builds of `steps` steps on `agents` agents at `tight_max`, the operator
   in a child process (`agentpool run`): its peak RSS (VmHWM) and CPU time per step; then it is
   stopped (SIGTERM) with every step finished, the counters are reset, and a new operator
   starts: the requests it makes and how long until it is quiet.
5. faults: (a) pod creation answering 500 for `create_fault_seconds` while a pool of
   `fault_agents` warms up: the operator's pod creates in that window and the pool's Degraded
   condition; (b) a build's next step arriving while exec answers 429 (Retry-After 1 s) for
   `exec_fault_seconds`, after its first step wrote a file and its session closed: does the
   step succeed on the same agent with the file there.

Targets are printed next to the figures (PASS/MISS) and never fail the command; a pool's peak
above its `apiConnections.max` or a step not Succeeded is a correctness failure (`failures`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.harness import (
    AGENTPOOLS,
    BENCH_CLIENT,
    BUILDSTEPS,
    OPERATOR_CLIENT,
    ROOT,
    BenchError,
    Json,
    StatsView,
    Testbed,
    operator_config,
    operator_process,
    parse_time,
    percentile,
    running_operator,
    step_body,
    testbed,
    warm_pool_body,
)
from bench.report import Benchmark, WideRow, markdown_table, print_table, record, section_opening

NAME = "pressure"
COMMAND = "make bench  # or: .venv/bin/python -m bench pressure"
TIME_SCALE = 0.1  # kubelet profiles at a tenth of their duration: agents warm up quickly
POOL = "pool"
COST_MAX = 32
WARM_WITHIN = 180.0
QUIET_FOR = 2.0  # the restarted operator is quiet after this long without a request
QUIET_WITHIN = 180.0
SESSION_CLOSE_WITHIN = 60.0
HANDOFF_FILE = "pressure-handoff.txt"
HANDOFF_TOKEN = "handoff-7f3a"
RSS_TARGET_MB = 300
FAULT_CREATES_TARGET = 30
GIT_STATE_PATHS = ("operator", "crds")


@dataclass(frozen=True)
class Scale:
    agents: int = 50
    builds: int = 200
    steps: int = 10
    tight_max: int = 32
    loose_max: int = 500
    long_share: float = 0.2
    long_seconds: int = 20
    # The steps benchmark's throughput workload (e): a few long builds, so that the baseline's
    # exec per step, not the machine's CPU, is what batching is measured against.
    cost_agents: int = 4
    cost_steps: int = 50
    cost_latencies_ms: tuple[int, ...] = (0, 150, 1000)
    big_builds: int = 1000
    fault_agents: int = 3
    create_fault_seconds: float = 10.0
    exec_fault_seconds: float = 3.0

    @classmethod
    def quick(cls) -> Scale:
        """A smoke run of the same workloads (more agents than connections still)."""
        return cls(
            agents=8,
            builds=24,
            tight_max=4,
            long_seconds=4,
            cost_agents=4,
            cost_steps=8,
            big_builds=60,
            create_fault_seconds=5.0,
        )

    @property
    def long_every(self) -> int:
        """Every n-th build is a long one."""
        return max(1, round(1 / self.long_share)) if self.long_share > 0 else 0


# --- one batch of builds ---------------------------------------------------------------------


@dataclass
class Outcome:
    """What one batch of builds did, from the steps' statuses and the sandbox's counters."""

    builds: dict[str, list[str]]  # build -> its step names, in order
    statuses: dict[str, Json]
    created_at: dict[str, float]  # step -> the client's create call (epoch seconds)
    began: float  # the first create call
    stats: StatsView = field(repr=False)
    pool: str = POOL
    finished_in_time: bool = True

    @property
    def steps(self) -> int:
        return len(self.statuses)

    @property
    def succeeded(self) -> int:
        return sum(s.get("phase") == "Succeeded" for s in self.statuses.values())

    @property
    def all_succeeded(self) -> bool:
        return self.succeeded == self.steps

    @property
    def seconds(self) -> float:
        """First create call to the last `finishedAt`."""
        ends = [parse_time(s.get("finishedAt")) for s in self.statuses.values()]
        end = max((e.timestamp() for e in ends if e is not None), default=self.began)
        return max(0.0, end - self.began)

    @property
    def throughput(self) -> float:
        """Succeeded steps per second."""
        return self.succeeded / self.seconds if self.seconds > 0 else 0.0

    @property
    def exec_opened(self) -> int:
        return self.stats.exec_opened(self.pool)

    @property
    def sessions_per_build(self) -> float:
        return self.exec_opened / len(self.builds) if self.builds else 0.0

    @property
    def operator_requests(self) -> int:
        return self.stats.requests(OPERATOR_CLIENT)

    @property
    def requests_per_step(self) -> float:
        return self.operator_requests / self.steps if self.steps else 0.0

    @property
    def peak(self) -> int:
        return self.stats.pool_peak(self.pool, OPERATOR_CLIENT)

    def queue_waits(self, builds: Iterable[str] | None = None) -> list[float]:
        """Per build: its first step's create call to that step's `startedAt`, in seconds."""
        waits = []
        for build in self.builds if builds is None else builds:
            first = self.builds[build][0]
            started = parse_time(self.statuses[first].get("startedAt"))
            if started is not None and first in self.created_at:
                waits.append(max(0.0, started.timestamp() - self.created_at[first]))
        return waits

    def started_sessions(self, builds: Iterable[str]) -> float:
        """Mean distinct exec sessions (`status.session`) the steps of a build started in.

        A session that yields during a long step and is resumed by a new one is not counted
        again: this is how often a build changed sessions at step boundaries."""
        counts = [
            len({self.statuses[n].get("session") for n in self.builds[b]} - {None}) for b in builds
        ]
        return sum(counts) / len(counts) if counts else 0.0

    def not_succeeded(self) -> dict[str, int]:
        """`phase/reason` of the steps that did not succeed, with counts."""
        return dict(
            Counter(
                f"{s.get('phase') or 'unfinished'}/{s.get('reason') or '-'}"
                for s in self.statuses.values()
                if s.get("phase") != "Succeeded"
            )
        )

    def summary(self) -> Json:
        waits = self.queue_waits()
        return {
            "builds": len(self.builds),
            "steps": self.steps,
            "succeeded": self.succeeded,
            "notSucceeded": self.not_succeeded(),
            "finishedInTime": self.finished_in_time,
            "seconds": round(self.seconds, 2),
            "stepsPerSecond": round(self.throughput, 2),
            "execOpened": self.exec_opened,
            "sessionsPerBuild": round(self.sessions_per_build, 3),
            "operatorRequests": self.operator_requests,
            "requestsPerStep": round(self.requests_per_step, 3),
            "poolPeak": self.peak,
            "queueWaitSeconds": {
                "p50": round(percentile(waits, 0.5), 2),
                "max": round(max(waits, default=0.0), 2),
            },
            "requestsByResource": dict(
                sorted(self.stats.requests_by_resource(OPERATOR_CLIENT).items())
            ),
        }


def uniform_plan(builds: int, steps: int) -> dict[str, list[str]]:
    """Build name -> the scripts of its steps: every step trivial."""
    return {f"b{b:04d}": ["true"] * steps for b in range(builds)}


def mixed_plan(scale: Scale) -> dict[str, list[str]]:
    """The uniform plan where every `long_every`-th build sleeps in its middle step."""
    plan = uniform_plan(scale.builds, scale.steps)
    for index, scripts in enumerate(plan.values()):
        if scale.long_every and index % scale.long_every == 0:
            scripts[len(scripts) // 2] = f"sleep {scale.long_seconds}"
    return plan


def within_for(steps: int, extra: float = 0.0) -> float:
    """A generous bound for a batch: 2 steps/s at least, whatever the machine's load."""
    return 120.0 + steps / 2.0 + extra


async def submit(
    bed: Testbed, plan: dict[str, list[str]], within: float, pool: str = POOL
) -> Outcome:
    """Reset the counters, create every step of `plan` at once, wait until all are final."""
    await bed.client.reset_stats()
    builds = {b: [f"{b}-s{i:02d}" for i in range(len(s))] for b, s in plan.items()}
    created_at: dict[str, float] = {}

    async def create(build: str, order: int, script: str) -> None:
        name = builds[build][order]
        created_at[name] = time.time()
        await bed.client.create(BUILDSTEPS, step_body(name, pool, build, order, script))

    began = time.time()
    await asyncio.gather(
        *(create(b, i, script) for b, scripts in plan.items() for i, script in enumerate(scripts))
    )
    names = [n for steps in builds.values() for n in steps]
    statuses, in_time = await bed.steps.wait_done(names, within)
    return Outcome(builds, statuses, created_at, began, await bed.client.stats(), pool, in_time)


async def warm(bed: Testbed, agents: int, pool: str = POOL, **spec: Any) -> None:
    await bed.client.create(AGENTPOOLS, warm_pool_body(pool, agents, **spec))
    await bed.pools.wait_idle({pool: agents}, WARM_WITHIN)


@contextlib.asynccontextmanager
async def in_process(bed: Testbed, **settings: Any) -> AsyncIterator[Any]:
    async with running_operator(operator_config(bed.cluster, **settings)) as memo:
        yield memo


# --- 1. seed and 2. mixed ---------------------------------------------------------------------


@dataclass(frozen=True)
class SeedConfig:
    max: int
    batching: bool

    @property
    def label(self) -> str:
        return f"max {self.max}, batching {'on' if self.batching else 'off'}"

    @property
    def key(self) -> str:
        return f"max{self.max}-{'on' if self.batching else 'off'}"


def seed_configs(scale: Scale) -> list[SeedConfig]:
    return [
        SeedConfig(scale.tight_max, True),
        SeedConfig(scale.loose_max, True),
        SeedConfig(scale.tight_max, False),
        SeedConfig(scale.loose_max, False),
    ]


async def seed_run(
    scale: Scale, config: SeedConfig, plan: dict[str, list[str]], workdir: Path
) -> Outcome:
    steps = sum(len(s) for s in plan.values())
    sleeping = sum(s.startswith("sleep") for scripts in plan.values() for s in scripts)
    extra = scale.long_seconds * sleeping / max(1, min(scale.agents, config.max))
    async with testbed(workdir, TIME_SCALE) as bed, in_process(bed, batching=config.batching):
        await warm(bed, scale.agents, apiConnections={"max": config.max})
        return await submit(bed, plan, within_for(steps, extra))


# --- 3. exec cost ----------------------------------------------------------------------------


async def cost_run(scale: Scale, latency_ms: int, batching: bool, workdir: Path) -> Outcome:
    async with testbed(workdir, TIME_SCALE) as bed, in_process(bed, batching=batching):
        await warm(bed, scale.cost_agents, apiConnections={"max": COST_MAX})
        if latency_ms:
            await bed.client.set_faults({"latency": {"ms": latency_ms, "verbs": ["exec"]}})
        steps = scale.cost_agents * scale.cost_steps
        slowest = steps * (latency_ms / 1000.0) / max(1, min(scale.cost_agents, COST_MAX))
        return await submit(
            bed, uniform_plan(scale.cost_agents, scale.cost_steps), within_for(steps, 2 * slowest)
        )


# --- 4. scale, with the operator in a child process -------------------------------------------


@dataclass(frozen=True)
class Quiet:
    """How a freshly started operator settled: requests until it went quiet.

    Quiet counts every client but the benchmark's: the operator's own User-Agent and kopf's
    (`kopf/<version>`: its lists and watches of the resources)."""

    requests: int  # the operator's User-Agent
    by_client: dict[str, int]  # every client but the benchmark's
    seconds: float  # process start -> its last request before the quiet period
    quiet: bool  # False: still busy when the bound ran out
    by_resource: dict[str, int]  # the operator's User-Agent

    @property
    def others(self) -> int:
        """Requests of the operator process under another User-Agent (kopf's)."""
        return sum(self.by_client.values()) - self.requests


def quiet_point(samples: Sequence[tuple[float, int]], quiet_for: float) -> tuple[float, int] | None:
    """The (time, count) of the last change before `quiet_for` without one, if any.

    `samples`: (time, requests so far) in time order; quiet needs at least one request."""
    last_change: tuple[float, int] | None = None
    previous = 0
    for when, count in samples:
        if count != previous:
            last_change, previous = (when, count), count
        elif last_change is not None and when - last_change[0] >= quiet_for:
            return last_change
    return None


async def until_quiet(bed: Testbed, started: float) -> Quiet:
    samples: list[tuple[float, int]] = []
    found = None
    while found is None and time.monotonic() - started < QUIET_WITHIN:
        await asyncio.sleep(0.1)
        stats = await bed.client.stats()
        clients = {c: n for c, n in stats.clients().items() if c != BENCH_CLIENT}
        samples.append((time.monotonic(), sum(clients.values())))
        found = quiet_point(samples, QUIET_FOR)
    return Quiet(
        requests=stats.requests(OPERATOR_CLIENT),
        by_client=clients,
        seconds=QUIET_WITHIN if found is None else found[0] - started,
        quiet=found is not None,
        by_resource=stats.requests_by_resource(OPERATOR_CLIENT),
    )


@dataclass
class ScaleResult:
    outcome: Outcome
    peak_rss_mb: float
    cpu_seconds: float  # the operator's CPU time while the workload ran
    stopped_in: float | None  # SIGTERM -> exit, None when it had to be killed
    exit_code: int | None
    restart: Quiet
    restart_peak_rss_mb: float
    log_bytes: int  # what the first operator logged (`agentpool run`'s default: INFO)

    @property
    def cpu_ms_per_step(self) -> float:
        return 1000.0 * self.cpu_seconds / self.outcome.steps if self.outcome.steps else 0.0

    def summary(self) -> Json:
        return {
            "workload": self.outcome.summary(),
            "peakRssMb": round(self.peak_rss_mb, 1),
            "cpuSeconds": round(self.cpu_seconds, 2),
            "cpuMsPerStep": round(self.cpu_ms_per_step, 3),
            "stoppedInSeconds": None if self.stopped_in is None else round(self.stopped_in, 2),
            "exitCode": self.exit_code,
            "logBytes": self.log_bytes,
            "restart": {
                **asdict(self.restart),
                "otherClients": self.restart.others,
                "seconds": round(self.restart.seconds, 2),
                "peakRssMb": round(self.restart_peak_rss_mb, 1),
            },
        }


async def scale_run(scale: Scale, workdir: Path) -> ScaleResult:
    plan = uniform_plan(scale.big_builds, scale.steps)
    steps = scale.big_builds * scale.steps
    async with testbed(workdir / "sandbox", TIME_SCALE) as bed:
        config = operator_config(bed.cluster)
        async with operator_process(config, workdir / "operator.log") as first:
            await warm(bed, scale.agents, apiConnections={"max": scale.tight_max})
            before = first.usage()
            outcome = await submit(bed, plan, within_for(steps))
            after = first.usage()
        await bed.client.reset_stats()
        async with operator_process(config, workdir / "restarted.log") as second:
            restart = await until_quiet(bed, second.started)
            restart_rss = second.usage().peak_rss_kib / 1024
    return ScaleResult(
        outcome=outcome,
        peak_rss_mb=after.peak_rss_kib / 1024,
        cpu_seconds=after.cpu_seconds - before.cpu_seconds,
        stopped_in=first.stopped_in,
        exit_code=first.exit_code,
        restart=restart,
        restart_peak_rss_mb=restart_rss,
        log_bytes=first.log.stat().st_size,
    )


# --- 5. faults ----------------------------------------------------------------------------------


@dataclass
class PoolStart:
    """(a) a pool warming up, with pod creation answering 500 for `seconds` or without."""

    seconds: float  # the window: pool created -> faults cleared
    fault: bool
    pod_creates: int  # the operator's, in the window
    degraded: bool  # Degraded=True seen on the pool during the window
    degraded_message: str
    ready_in: float | None  # end of the window -> every agent ready; None: not within bound

    def summary(self) -> Json:
        return asdict(self)


@dataclass
class Handoff:
    """(b) the next step of a build arriving once its first step's session closed, while exec
    answers 429 for `seconds` (0: no fault)."""

    seconds: float
    session_closed: bool  # the build's first session had closed when step 2 was created
    phase: str
    reason: str
    first_agent: str
    agent: str
    file_present: bool
    exec_requests: int  # the operator's exec requests from step 2's creation on
    throttled: int  # 429 answers in that time
    started_after: float | None  # step 2 created -> its startedAt

    @property
    def succeeded(self) -> bool:
        return self.phase == "Succeeded"

    @property
    def same_agent(self) -> bool:
        return bool(self.agent) and self.agent == self.first_agent

    def summary(self) -> Json:
        return asdict(self) | {"succeeded": self.succeeded, "sameAgent": self.same_agent}


async def after(seconds: float, action: Callable[[], Awaitable[None]]) -> None:
    await asyncio.sleep(seconds)
    await action()


async def sessions_closed(bed: Testbed, pool: str, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not (await bed.client.stats()).exec_open(pool):
            return True
        await asyncio.sleep(0.05)
    return False


async def handoff(bed: Testbed, pool: str, build: str, fault_seconds: float) -> Handoff:
    first, second = f"{build}-1", f"{build}-2"
    # Named after the build: another build's file on the same agent must not count.
    path, token = f"{build}-{HANDOFF_FILE}", f"{HANDOFF_TOKEN}-{build}"
    await bed.client.create(BUILDSTEPS, step_body(first, pool, build, 0, f"echo {token} > {path}"))
    await bed.steps.wait_final([first], within=120)
    # The build's session closes after the pool's linger; the next step then needs a new one.
    closed = await sessions_closed(bed, pool, SESSION_CLOSE_WITHIN)
    await bed.client.reset_stats()
    lift: asyncio.Task[None] | None = None
    if fault_seconds:
        throttle = {"code": 429, "verbs": ["exec"], "retryAfterSeconds": 1}
        await bed.client.set_faults({"errors": [throttle]})
        lift = asyncio.create_task(after(fault_seconds, bed.client.clear_faults))
    created = time.time()
    await bed.client.create(BUILDSTEPS, step_body(second, pool, build, 1, f"cat {path}"))
    try:
        statuses, _ = await bed.steps.wait_done([second], within=120)
    finally:
        if lift is not None:
            await lift
    stats = await bed.client.stats()
    status = statuses[second]
    started = parse_time(status.get("startedAt"))
    return Handoff(
        seconds=fault_seconds,
        session_closed=closed,
        phase=str(status.get("phase") or "unfinished"),
        reason=str(status.get("reason") or ""),
        first_agent=str(bed.steps.status(first).get("agent") or ""),
        agent=str(status.get("agent") or ""),
        file_present=token in str(status.get("logTail") or ""),
        exec_requests=stats.requests_by_resource(OPERATOR_CLIENT).get("pods/exec exec", 0),
        throttled=stats.responses(429),
        started_after=None if started is None else started.timestamp() - created,
    )


async def pool_start(bed: Testbed, pool: str, agents: int, window: float, fault: bool) -> PoolStart:
    await bed.client.reset_stats()
    if fault:
        failing = {"code": 500, "verbs": ["create"], "resources": ["pods"]}
        await bed.client.set_faults({"errors": [failing]})
    await bed.client.create(AGENTPOOLS, warm_pool_body(pool, agents))
    await asyncio.sleep(window)
    stats = await bed.client.stats()
    await bed.client.clear_faults()
    cleared = time.monotonic()
    degraded = bed.pools.conditions_seen.get((pool, "Degraded", "True"))
    ready_in: float | None = None
    with contextlib.suppress(BenchError):
        await bed.pools.wait_idle({pool: agents}, WARM_WITHIN)
        ready_in = time.monotonic() - cleared
    return PoolStart(
        seconds=window,
        fault=fault,
        pod_creates=stats.requests_by_resource(OPERATOR_CLIENT).get("pods create", 0),
        degraded=degraded is not None,
        degraded_message=degraded or "",
        ready_in=ready_in,
    )


@dataclass
class FaultResults:
    """Each fault next to the same sequence without it (the control)."""

    handoffs: tuple[Handoff, Handoff]  # control, 429
    starts: tuple[PoolStart, PoolStart]  # control, 500

    def summary(self) -> Json:
        return {
            "handoff": [h.summary() for h in self.handoffs],
            "poolStart": [p.summary() for p in self.starts],
        }


async def faults_run(scale: Scale, workdir: Path) -> FaultResults:
    window = scale.create_fault_seconds
    async with testbed(workdir, TIME_SCALE) as bed, in_process(bed):
        await warm(bed, scale.fault_agents, "sticky")
        calm = await handoff(bed, "sticky", "calm", 0.0)
        throttled = await handoff(bed, "sticky", "throttled", scale.exec_fault_seconds)
        steady = await pool_start(bed, "steady", scale.fault_agents, window, fault=False)
        flaky = await pool_start(bed, "flaky", scale.fault_agents, window, fault=True)
    return FaultResults((calm, throttled), (steady, flaky))


# --- the figures ------------------------------------------------------------------------------


@dataclass
class Results:
    seed: dict[SeedConfig, Outcome]
    mixed: Outcome
    cost: dict[tuple[int, bool], Outcome]  # (latency ms, batching)
    scale: ScaleResult
    faults: FaultResults
    seconds: dict[str, float]  # per workload
    load: dict[str, float] = field(default_factory=dict)  # 5-minute load average at its end
    code: dict[str, Json] = field(default_factory=dict)  # git state of the operator measured


@dataclass(frozen=True)
class Table:
    key: str
    title: str
    columns: tuple[str, ...]
    rows: list[WideRow]


def _rate(value: float) -> str:
    return f"{value:.1f} steps/s"


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 0.0


def seed_table(seed: dict[SeedConfig, Outcome], scale: Scale) -> Table:
    configs = seed_configs(scale)
    tight, loose = configs[0], configs[1]
    runs = [seed[c] for c in configs]
    t = seed[tight]
    ratio_on = _ratio(t.throughput, seed[loose].throughput)
    ratio_off = _ratio(seed[configs[2]].throughput, seed[configs[3]].throughput)
    rows = [
        WideRow(
            "exec sessions per build",
            tuple(f"{r.sessions_per_build:.2f}" for r in runs),
            f"<= 1.2 (max {tight.max}, on)",
            t.sessions_per_build <= 1.2,
        ),
        WideRow(
            "operator requests per step",
            tuple(f"{r.requests_per_step:.2f}" for r in runs),
            f"<= 2.0 (max {tight.max}, on)",
            t.requests_per_step <= 2.0,
        ),
        WideRow(
            "pool peak concurrent connections",
            tuple(str(r.peak) for r in runs),
            f"<= {tight.max} (max {tight.max}, on)",
            t.peak <= tight.max,
        ),
        WideRow(
            "steps Succeeded",
            tuple(f"{r.succeeded}/{r.steps}" for r in runs),
            f"all (max {tight.max}, on)",
            t.all_succeeded,
        ),
        WideRow("throughput", tuple(_rate(r.throughput) for r in runs)),
        WideRow(
            f"throughput max {tight.max} / max {loose.max}",
            (f"{ratio_on:.2f}x", "1x", f"{ratio_off:.2f}x", "1x"),
            ">= 0.8x (batching on)",
            ratio_on >= 0.8,
        ),
        WideRow(
            "longest queue wait of a build",
            tuple(f"{max(r.queue_waits(), default=0.0):.1f} s" for r in runs),
        ),
        WideRow("exec sessions opened", tuple(str(r.exec_opened) for r in runs)),
    ]
    return Table(
        "seed",
        f"1. Seed: {scale.agents} warm agents, {scale.builds} builds x {scale.steps} steps",
        ("figure", *(c.label for c in configs)),
        rows,
    )


def mixed_table(results: Results, scale: Scale, plan: dict[str, list[str]]) -> Table:
    uniform = results.seed[seed_configs(scale)[0]]
    mixed = results.mixed
    long = {b for b, scripts in plan.items() if any(s.startswith("sleep") for s in scripts)}
    short = [b for b in mixed.builds if b not in long]

    def waits(outcome: Outcome) -> str:
        values = outcome.queue_waits()
        return f"{max(values, default=0.0):.1f} s (p50 {percentile(values, 0.5):.1f} s)"

    rows = [
        WideRow("longest queue wait of a build (p50)", (waits(uniform), waits(mixed))),
        WideRow(
            "sessions per build, short builds (distinct status.session)",
            (
                f"{uniform.started_sessions(uniform.builds):.2f}",
                f"{mixed.started_sessions(short):.2f}",
            ),
        ),
        WideRow(
            "sessions per build, long builds (distinct status.session)",
            ("-", f"{mixed.started_sessions(long & set(mixed.builds)):.2f}"),
        ),
        WideRow(
            "exec sessions per build (sandbox, all builds)",
            (f"{uniform.sessions_per_build:.2f}", f"{mixed.sessions_per_build:.2f}"),
        ),
        WideRow(
            "pool peak concurrent connections",
            (str(uniform.peak), str(mixed.peak)),
            f"<= {scale.tight_max}",
            mixed.peak <= scale.tight_max,
        ),
        WideRow(
            "steps Succeeded",
            (f"{uniform.succeeded}/{uniform.steps}", f"{mixed.succeeded}/{mixed.steps}"),
            "all",
            mixed.all_succeeded,
        ),
        WideRow("throughput", (_rate(uniform.throughput), _rate(mixed.throughput))),
    ]
    share = f"{len(long)} of {len(plan)} builds with one `sleep {scale.long_seconds}` step"
    return Table(
        "mixed",
        f"2. Mixed durations (max {scale.tight_max}, batching on)",
        ("figure", "all trivial (seed run)", share),
        rows,
    )


def cost_table(cost: dict[tuple[int, bool], Outcome], scale: Scale) -> Table:
    latencies = scale.cost_latencies_ms
    on = [cost[(ms, True)] for ms in latencies]
    off = [cost[(ms, False)] for ms in latencies]
    ratios = [_ratio(a.throughput, b.throughput) for a, b in zip(on, off, strict=True)]
    slowest = latencies.index(max(latencies))
    rows = [
        WideRow("throughput, batching on", tuple(_rate(r.throughput) for r in on)),
        WideRow("throughput, batching off", tuple(_rate(r.throughput) for r in off)),
        WideRow(
            "on / off",
            tuple(f"{r:.1f}x" for r in ratios),
            f">= 10x at {max(latencies)} ms",
            ratios[slowest] >= 10,
        ),
        WideRow(
            "exec sessions on / off",
            tuple(f"{a.exec_opened} / {b.exec_opened}" for a, b in zip(on, off, strict=True)),
        ),
        WideRow(
            "steps Succeeded on / off",
            tuple(
                f"{a.succeeded}/{a.steps} / {b.succeeded}/{b.steps}"
                for a, b in zip(on, off, strict=True)
            ),
            "all",
            all(r.all_succeeded for r in (*on, *off)),
        ),
    ]
    return Table(
        "cost",
        f"3. Exec cost: {scale.cost_agents} builds x {scale.cost_steps} steps on "
        f"{scale.cost_agents} agents, max {COST_MAX}",
        ("figure", *(f"exec latency {ms} ms" for ms in latencies)),
        rows,
    )


def scale_table(result: ScaleResult, scale: Scale) -> Table:
    o, restart = result.outcome, result.restart
    stop = "killed" if result.stopped_in is None else f"{result.stopped_in:.1f} s"
    quiet = f"{restart.seconds:.1f} s" if restart.quiet else f"not within {QUIET_WITHIN:.0f} s"
    rows = [
        WideRow("steps Succeeded", (f"{o.succeeded}/{o.steps}",), "all", o.all_succeeded),
        WideRow("throughput", (_rate(o.throughput),)),
        WideRow(
            "operator peak RSS (VmHWM)",
            (f"{result.peak_rss_mb:.0f} MB",),
            f"<= {RSS_TARGET_MB} MB",
            result.peak_rss_mb <= RSS_TARGET_MB,
        ),
        WideRow(
            "operator CPU per step (utime+stime)",
            (f"{result.cpu_ms_per_step:.2f} ms ({result.cpu_seconds:.0f} s in all)",),
        ),
        WideRow("operator requests per step", (f"{o.requests_per_step:.2f}",)),
        WideRow("exec sessions per build", (f"{o.sessions_per_build:.2f}",)),
        WideRow(
            "pool peak concurrent connections",
            (str(o.peak),),
            f"<= {scale.tight_max}",
            o.peak <= scale.tight_max,
        ),
        WideRow("SIGTERM -> exit", (f"{stop} (exit code {result.exit_code})",)),
        WideRow(
            "restart: requests until quiet (operator / kopf's lists and watches)",
            (f"{restart.requests} / {restart.others}",),
        ),
        WideRow(f"restart: time until quiet ({QUIET_FOR:g} s without a request)", (quiet,)),
        WideRow("restart: peak RSS", (f"{result.restart_peak_rss_mb:.0f} MB",)),
    ]
    steps = scale.big_builds * scale.steps
    return Table(
        "scale",
        f"4. Scale: {steps} BuildSteps ({scale.big_builds} builds x {scale.steps}) on "
        f"{scale.agents} agents, max {scale.tight_max}, operator in a child process",
        ("figure", "agentpool run"),
        rows,
    )


def faults_table(faults: FaultResults) -> Table:
    def seconds(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f} s"

    def outcome(h: Handoff) -> str:
        return h.phase if h.succeeded or not h.reason else f"{h.phase}/{h.reason}"

    def agents(h: Handoff) -> str:
        return "yes" if h.same_agent else f"no ({h.first_agent} -> {h.agent})"

    calm, throttled = faults.handoffs
    steady, flaky = faults.starts
    rows = [
        WideRow(
            f"(a) operator pod creates in the {flaky.seconds:g} s window",
            (str(steady.pod_creates), str(flaky.pod_creates)),
            f"<= {FAULT_CREATES_TARGET}",
            flaky.pod_creates <= FAULT_CREATES_TARGET,
        ),
        WideRow(
            "(a) pool Degraded=True seen in the window",
            tuple("yes" if p.degraded else "no" for p in faults.starts),
        ),
        WideRow(
            "(a) end of the window -> every agent ready",
            tuple(seconds(p.ready_in) for p in faults.starts),
        ),
        WideRow(
            "(b) step 2 of the build",
            (outcome(calm), outcome(throttled)),
            "Succeeded",
            throttled.succeeded,
        ),
        WideRow(
            "(b) step 2 on step 1's agent (status.agent)",
            (agents(calm), agents(throttled)),
            "yes",
            throttled.same_agent,
        ),
        WideRow(
            "(b) step 1's file present for step 2",
            tuple("yes" if h.file_present else "no" for h in faults.handoffs),
            "yes",
            throttled.file_present,
        ),
        WideRow(
            "(b) operator exec requests / 429 answers",
            tuple(f"{h.exec_requests} / {h.throttled}" for h in faults.handoffs),
        ),
        WideRow(
            "(b) step 2 created -> startedAt",
            tuple(seconds(h.started_after) for h in faults.handoffs),
        ),
    ]
    return Table(
        "faults",
        "5. Faults: each next to the same sequence without it",
        (
            "figure",
            "no fault (control)",
            f"(a) pod create 500 for {flaky.seconds:g} s, (b) exec 429 for {throttled.seconds:g} s",
        ),
        rows,
    )


def tables(results: Results, scale: Scale) -> list[Table]:
    return [
        seed_table(results.seed, scale),
        mixed_table(results, scale, mixed_plan(scale)),
        cost_table(results.cost, scale),
        scale_table(results.scale, scale),
        faults_table(results.faults),
    ]


def correctness_failures(results: Results, scale: Scale) -> list[str]:
    """A pool above its `apiConnections.max`, or a step that did not succeed."""
    runs: list[tuple[str, Outcome, int]] = [
        (f"seed/{c.key}", o, c.max) for c, o in results.seed.items()
    ]
    runs.append(("mixed", results.mixed, scale.tight_max))
    runs += [
        (f"cost/{ms}ms-{'on' if on else 'off'}", o, COST_MAX)
        for (ms, on), o in results.cost.items()
    ]
    runs.append(("scale", results.scale.outcome, scale.tight_max))
    failures = []
    for name, outcome, limit in runs:
        if outcome.peak > limit:
            failures.append(f"{name}: peak {outcome.peak} connections > apiConnections.max {limit}")
        if not outcome.all_succeeded:
            reasons = ", ".join(f"{k} {v}" for k, v in outcome.not_succeeded().items())
            failures.append(
                f"{name}: {outcome.succeeded}/{outcome.steps} steps Succeeded ({reasons})"
            )
    for handoff_run in results.faults.handoffs:
        if not handoff_run.succeeded:
            fault = f"exec 429 for {handoff_run.seconds:g} s" if handoff_run.seconds else "no fault"
            failures.append(
                f"faults/handoff ({fault}): step 2 ended {handoff_run.phase} "
                f"{handoff_run.reason}".rstrip()
            )
    return failures


# --- the run ----------------------------------------------------------------------------------


def git_state() -> Json:
    """Which operator code was measured: the commit, and files changed but not committed."""

    def git(*args: str) -> str:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            done = subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False
            )
            return done.stdout.strip()
        return ""

    changed = git("status", "--porcelain", "--", *GIT_STATE_PATHS)
    return {"commit": git("rev-parse", "--short", "HEAD"), "uncommitted": changed.splitlines()}


async def measure(scale: Scale, workdir: Path) -> Results:
    seconds: dict[str, float] = {}
    load: dict[str, float] = {}
    # The in-process operator runs the code imported at the start; the child operator of the
    # scale workload imports it again (others may change the working tree meanwhile).
    code = {"inProcess": git_state()}

    async def timed(name: str, work: Awaitable[Any]) -> Any:
        begin = time.monotonic()
        print(f"pressure: {name} ...", flush=True)
        result = await work
        seconds[name] = time.monotonic() - begin
        # What else ran on the machine meanwhile (the 5-minute average, at the end).
        load[name] = os.getloadavg()[1]
        print(f"pressure: {name} took {seconds[name]:.0f} s, load {load[name]:.1f}", flush=True)
        return result

    async def seed_all() -> dict[SeedConfig, Outcome]:
        plan = uniform_plan(scale.builds, scale.steps)
        return {
            c: await seed_run(scale, c, plan, workdir / f"seed-{c.key}")
            for c in seed_configs(scale)
        }

    async def cost_all() -> dict[tuple[int, bool], Outcome]:
        return {
            (ms, on): await cost_run(scale, ms, on, workdir / f"cost-{ms}-{on}")
            for ms in scale.cost_latencies_ms
            for on in (True, False)
        }

    seed = await timed("seed", seed_all())
    mixed_config = SeedConfig(scale.tight_max, True)
    mixed = await timed(
        "mixed", seed_run(scale, mixed_config, mixed_plan(scale), workdir / "mixed")
    )
    cost = await timed("cost", cost_all())
    code["childProcess"] = git_state()
    big = await timed("scale", scale_run(scale, workdir / "scale"))
    faults = await timed("faults", faults_run(scale, workdir / "faults"))
    return Results(seed, mixed, cost, big, faults, seconds, load, code)


def describe_code(code: dict[str, Json]) -> str:
    """Which operator code the figures are of, in a sentence."""

    def one(state: Json) -> str:
        changed = len(state.get("uncommitted") or ())
        dirty = f" with {changed} uncommitted file(s) under operator/ and crds/" if changed else ""
        return f"commit `{state.get('commit')}`{dirty}"

    start, child = code.get("inProcess") or {}, code.get("childProcess")
    text = f"Operator code: {one(start)}."
    if child is not None and child != start:
        text += (
            f" The working tree changed meanwhile: workload 4's child operator ran {one(child)}."
        )
    return text


def figures(results: Results) -> Json:
    return {
        "operator": results.code,
        "settings": {"timeScale": TIME_SCALE, "costMax": COST_MAX, "quietFor": QUIET_FOR},
        "workloadSeconds": {k: round(v, 1) for k, v in results.seconds.items()},
        "loadAverage5m": {k: round(v, 2) for k, v in results.load.items()},
        "seed": {c.key: o.summary() for c, o in results.seed.items()},
        "mixed": results.mixed.summary(),
        "cost": {
            f"{ms}ms-{'on' if on else 'off'}": o.summary() for (ms, on), o in results.cost.items()
        },
        "scale": results.scale.summary(),
        "faults": results.faults.summary(),
    }


BENCHMARK = Benchmark(NAME, COMMAND, "Under API pressure", ("figure",))


def doc_section(shown: list[Table], results: Results, scale: Scale, seconds: float) -> str:
    parts = [section_opening(BENCHMARK, "Under API pressure", seconds)]
    took = ", ".join(
        f"{k} {v:.0f} s (load {results.load.get(k, 0.0):.1f})" for k, v in results.seconds.items()
    )
    code = describe_code(results.code)
    parts.append(
        f"{code} Workloads took (with the machine's "
        f"5-minute load average at their end, on {os.cpu_count()} cores): {took}.\n"
    )
    for table in shown:
        parts.append(f"**{table.title}**\n\n{markdown_table(table.columns, table.rows)}\n")
    parts.append(
        f"""How it is measured, in one run: every configuration gets a fresh sandbox (child process)
and a fresh operator with the same code and the test-suite settings (default `buildGrace`,
`sessionHold`, pool `sessions` and `queueTimeout`), kubelet profiles at a tenth of their
duration, and the sandbox's counters reset once the pool is warm. Counts are the sandbox's,
filtered by the operator's User-Agent (`{OPERATOR_CLIENT}`); the pool's peak is the sandbox's
per-pool count of concurrent requests and exec WebSockets (watches excluded). Throughput is
Succeeded steps / (last `finishedAt` - first create call); a build's queue wait is its first
step's create call to that step's `startedAt`. Targets apply to the tight quota with batching
(the seed's situation: more agents than connections).

- 2: sessions per build by kind count the distinct `status.session` of a build's steps (a
  session resumed during a long step is not counted again); the sandbox's count covers all.
- 3: the sandbox delays every exec upgrade by the latency (a latency rule for the `exec` verb,
  set once the agents are warm); batching pays it once per session, the baseline per step.
- 4: `agentpool run` in a child process (its default INFO logging to a file); RSS is its
  `VmHWM`, CPU its `utime + stime` from the first step's creation to the last one's end. Then
  SIGTERM, the counters reset, and a second `agentpool run` against the same
  {scale.big_builds * scale.steps} finished steps and {scale.agents} agents: its requests until
  {QUIET_FOR:g} s pass without a request from the operator's process (its own User-Agent or
  kopf's), timed from the process start.
- 5: one sandbox and operator; each fault next to the same sequence without it. (a) a pool
  of {scale.fault_agents} agents is created while every pod create answers 500 (the control
  pool: none) and counted for {scale.create_fault_seconds:g} s; Degraded is what a watch of the
  pool saw in that window. (b) on a warm pool of {scale.fault_agents} agents, step 1 of a build
  writes a file named after the build in its working directory, the build's session closes
  (linger), then step 2 (`cat` of the file) is created while exec answers 429 (Retry-After
  1 s) for {scale.exec_fault_seconds:g} s (the control build: no fault). Throttling is not
  agent loss: step 2 should run where the build's files are.
- Everything shares 2 cores with the sandbox's shells: treat rates as +-20 %; counts and peaks
  do not move that much.
"""
    )
    return "\n".join(parts)


async def run(out: Path) -> dict[str, Any]:
    """Run the benchmark, print the tables, write `<out>/pressure.json` and the docs section."""
    return await run_scaled(out, Scale())


async def run_scaled(out: Path, scale: Scale, write_doc: bool = True) -> dict[str, Any]:
    begin = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="agentpool-bench-") as workdir:
        results = await measure(scale, Path(workdir))
    seconds = time.monotonic() - begin
    shown = tables(results, scale)
    for table in shown:
        print_table(table.title, table.columns, table.rows)
    failures = correctness_failures(results, scale)
    table_json = {t.key: [asdict(row) for row in t.rows] for t in shown}
    section = doc_section(shown, results, scale, seconds) if write_doc else None
    return record(
        BENCHMARK,
        table_json,
        failures,
        figures(results),
        seconds=seconds,
        scale=scale,
        out=out,
        section=section,
    )
