"""The pressure benchmark's figures: pure code over statuses and sandbox stats documents."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from agentpool.config import Config
from bench.harness import (
    OPERATOR_CLIENT,
    StatsView,
    config_environment,
    cpu_seconds,
    peak_rss_kib,
)
from bench.pressure import (
    POOL,
    FaultResults,
    Handoff,
    Outcome,
    PoolStart,
    Scale,
    correctness_failures,
    faults_table,
    mixed_plan,
    quiet_point,
    seed_configs,
    seed_table,
    uniform_plan,
)
from bench.report import WideRow, markdown_table

T0 = 1_800_000_000.0  # epoch seconds of the first create call


def _time(offset: float) -> str:
    from datetime import UTC, datetime  # noqa: PLC0415

    return datetime.fromtimestamp(T0 + offset, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _stats(requests: int, exec_opened: int, peak: int) -> StatsView:
    pool = f"default/{POOL}"
    return StatsView(
        {
            "requests": {"byClient": {OPERATOR_CLIENT: {"total": requests, "byResource": {}}}},
            "exec": {"byPool": {pool: {"opened": exec_opened, "current": 0, "peak": 1}}},
            "connections": {"byPool": {pool: {"byClient": {OPERATOR_CLIENT: {"peak": peak}}}}},
        }
    )


def _outcome(
    builds: int = 2,
    steps: int = 2,
    *,
    requests: int = 8,
    exec_opened: int = 2,
    peak: int = 3,
    phase: str = "Succeeded",
) -> Outcome:
    """`builds` builds of `steps` steps; build b's steps start at b s and take 1 s each."""
    names = {f"b{b}": [f"b{b}-s{i}" for i in range(steps)] for b in range(builds)}
    statuses: dict[str, dict[str, Any]] = {}
    for b, (build, steps_of_build) in enumerate(names.items()):
        for i, name in enumerate(steps_of_build):
            statuses[name] = {
                "phase": phase,
                "startedAt": _time(b + i),
                "finishedAt": _time(b + i + 1),
                "session": f"{build}-session",
            }
    created = {n: T0 for n in statuses}
    return Outcome(names, statuses, created, T0, _stats(requests, exec_opened, peak))


def test_outcome_reads_its_figures_from_statuses_and_sandbox_stats() -> None:
    outcome = _outcome(builds=2, steps=2, requests=8, exec_opened=3, peak=4)

    assert (outcome.steps, outcome.succeeded, outcome.all_succeeded) == (4, 4, True)
    assert outcome.seconds == 3.0  # last finishedAt: build 1, step 1 at 1 + 1 + 1 s
    assert round(outcome.throughput, 3) == round(4 / 3, 3)
    assert (outcome.sessions_per_build, outcome.requests_per_step, outcome.peak) == (1.5, 2.0, 4)
    assert outcome.queue_waits() == [0.0, 1.0]
    assert outcome.started_sessions(["b0", "b1"]) == 1.0


def test_outcome_counts_steps_that_did_not_succeed_by_phase_and_reason() -> None:
    outcome = _outcome(builds=1, steps=2)
    outcome.statuses["b0-s1"] = {"phase": "Failed", "reason": "ApiQuotaTimeout"}
    outcome.statuses["b0-s0"] = {}

    assert outcome.not_succeeded() == {"Failed/ApiQuotaTimeout": 1, "unfinished/-": 1}
    assert outcome.succeeded == 0


def test_mixed_plan_puts_one_long_step_in_the_middle_of_every_fifth_build() -> None:
    scale = replace(Scale(), builds=10, steps=4, long_seconds=20)

    plan = mixed_plan(scale)

    long = [b for b, scripts in plan.items() if "sleep 20" in scripts]
    assert long == ["b0000", "b0005"]
    assert plan["b0005"] == ["true", "true", "sleep 20", "true"]
    assert uniform_plan(2, 3) == {"b0000": ["true"] * 3, "b0001": ["true"] * 3}


def test_quiet_point_is_the_last_request_before_a_quiet_period() -> None:
    samples = [(0.0, 0), (1.0, 5), (2.0, 9), (3.0, 9), (4.5, 9)]

    assert quiet_point(samples, 2.0) == (2.0, 9)
    assert quiet_point(samples[:4], 2.0) is None
    # No request yet: starting up is not being quiet.
    assert quiet_point([(0.0, 0), (5.0, 0)], 2.0) is None


def _seed(**tight: Any) -> dict[Any, Outcome]:
    scale = Scale()
    runs = {config: _outcome() for config in seed_configs(scale)}
    tight_config = seed_configs(scale)[0]
    runs[tight_config] = _outcome(**tight)
    return runs


def test_seed_table_judges_the_tight_quota_with_batching() -> None:
    scale = Scale()

    good = seed_table(_seed(requests=8, exec_opened=2, peak=32), scale)
    bad = seed_table(_seed(requests=9, exec_opened=3, peak=33), scale)

    assert [row.met for row in good.rows if row.met is not None] == [True] * 5
    assert [row.verdict for row in bad.rows if row.met is not None] == [
        "MISS",  # 1.5 sessions per build
        "MISS",  # 2.25 requests per step
        "MISS",  # peak 33 > 32
        "PASS",
        "PASS",  # same throughput: 1x
    ]
    assert good.columns[1:] == (
        "max 32, batching on",
        "max 500, batching on",
        "max 32, batching off",
        "max 500, batching off",
    )


def _handoff(agent: str, phase: str = "Succeeded") -> Handoff:
    return Handoff(3.0, True, phase, "", "a", agent, True, 1, 0, 0.1)


def _faults(handoff: Handoff) -> FaultResults:
    start = PoolStart(10.0, True, 7, True, "failing", 2.0)
    return FaultResults((_handoff("a"), handoff), (replace(start, fault=False), start))


def test_failures_are_peaks_above_the_limit_and_steps_not_succeeded() -> None:
    from bench.pressure import Quiet, Results, ScaleResult  # noqa: PLC0415

    scale = Scale()
    seed = _seed(peak=33)
    quiet = Quiet(2, {OPERATOR_CLIENT: 2}, 3.0, True, {})
    big = ScaleResult(_outcome(phase="Failed"), 100.0, 1.0, 1.0, 0, quiet, 90.0, 0)
    results = Results(seed, _outcome(), {}, big, _faults(_handoff("b", "Failed")), {})

    failures = correctness_failures(results, scale)

    assert failures == [
        "seed/max32-on: peak 33 connections > apiConnections.max 32",
        "scale: 0/4 steps Succeeded (Failed/- 4)",
        "faults/handoff (exec 429 for 3 s): step 2 ended Failed",
    ]


def test_faults_table_puts_each_fault_next_to_its_control() -> None:
    table = faults_table(_faults(_handoff("b")))

    moved = next(row for row in table.rows if "step 1's agent" in row.figure)
    assert moved.values == ("yes", "no (a -> b)")
    assert moved.verdict == "MISS"
    assert table.rows[0].values == ("7", "7") and table.rows[0].verdict == "PASS"


def test_wide_rows_render_every_configuration_and_a_verdict() -> None:
    rows = [WideRow("peak", ("4", "9"), "<= 4", True), WideRow("rate", ("1 | 2", "3"))]

    text = markdown_table(("figure", "a", "b"), rows)

    assert text.splitlines() == [
        "| figure | a | b | target | met |",
        "|---|---|---|---|---|",
        "| peak | 4 | 9 | <= 4 | PASS |",
        "| rate | 1 \\| 2 | 3 |  |  |",
    ]


def test_proc_figures_of_the_operator_process() -> None:
    status = "Name:\tpython\nVmPeak:\t  900 kB\nVmHWM:\t  123456 kB\nVmRSS:\t 100 kB\n"
    # pid (comm with spaces) state ppid ... utime is field 14, stime field 15.
    stat = "42 (python3 -m x) S 1 42 42 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 3 0"

    assert peak_rss_kib(status) == 123456
    assert peak_rss_kib("Name:\tx\n") == 0
    assert cpu_seconds(stat, 100) == 3.0


def test_the_child_operator_gets_the_same_settings_through_its_environment() -> None:
    config = Config(
        namespaces=("default",),
        metrics_port=0,
        liveness_port=0,
        standalone=True,
        kubeconfig="/tmp/kubeconfig",
        batching=False,
        image_pull_grace=1.0,
    )

    assert Config.from_env(config_environment(config)) == config


def test_the_docs_section_names_the_command_the_code_and_every_table() -> None:
    from bench.pressure import Quiet, Results, ScaleResult, doc_section, tables  # noqa: PLC0415

    scale = Scale()
    quiet = Quiet(2, {OPERATOR_CLIENT: 2, "kopf/1": 16}, 3.0, True, {})
    big = ScaleResult(_outcome(), 100.0, 1.0, 1.0, 0, quiet, 90.0, 0)
    cost = {(ms, on): _outcome() for ms in scale.cost_latencies_ms for on in (True, False)}
    state = {"commit": "abc1234", "uncommitted": []}
    code = {"inProcess": state, "childProcess": {**state, "uncommitted": ["M operator/x.py"]}}
    results = Results(
        _seed(), _outcome(), cost, big, _faults(_handoff("a")), {"seed": 60.0}, {"seed": 3.2}, code
    )

    text = doc_section(tables(results, scale), results, scale, 61.0)

    assert text.startswith("## Under API pressure\n\nCommand: `make bench  # or: .venv/bin/python")
    assert "Operator code: commit `abc1234`. The working tree changed meanwhile" in text
    assert "seed 60 s (load 3.2)" in text
    assert text.count("| figure |") == 5
