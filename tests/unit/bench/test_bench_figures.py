"""The benchmark's reading of sandbox stats and its docs sections."""

from __future__ import annotations

import math

from bench.harness import OPERATOR_CLIENT, StatsView, percentile
from bench.report import replace_section

STATS = {
    "requests": {
        "total": 9,
        "byClient": {
            OPERATOR_CLIENT: {
                "total": 7,
                "byResource": {
                    "buildsteps.agentpool.dev/status": {"patch": 6},
                    "pods/exec": {"exec": 1},
                },
            },
            "agentpool-bench": {
                "total": 2,
                "byResource": {"buildsteps.agentpool.dev": {"create": 2}},
            },
        },
    },
    "exec": {"byPool": {"default/p": {"opened": 1, "current": 0, "peak": 1}}},
    "connections": {
        "byPool": {
            "default/p": {
                "current": 0,
                "peak": 6,
                "byClient": {
                    OPERATOR_CLIENT: {"current": 0, "peak": 4},
                    "agentpool-bench": {"current": 0, "peak": 2},
                },
            }
        }
    },
}


def test_stats_view_keeps_the_operator_apart_from_the_bench_client() -> None:
    view = StatsView(STATS)

    assert view.requests() == 7
    assert view.requests("agentpool-bench") == 2
    assert view.requests_by_resource() == {
        "buildsteps.agentpool.dev/status patch": 6,
        "pods/exec exec": 1,
    }
    assert view.pool_peak("p") == 4
    assert view.exec_opened("p") == 1


def test_stats_view_reads_absent_pools_and_clients_as_zero() -> None:
    view = StatsView({"requests": {}, "exec": {}, "connections": {}})

    assert (view.requests(), view.pool_peak("p"), view.exec_opened("p")) == (0, 0, 0)


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]

    assert (percentile(values, 0.5), percentile(values, 0.99), percentile(values, 1.0)) == (
        50.0,
        99.0,
        100.0,
    )
    assert math.isnan(percentile([], 0.5))


def test_replace_section_rewrites_only_its_own_markers() -> None:
    text = (
        "# Perf\n\n<!-- bench:agents -->\nA\n<!-- /bench:agents -->\n\n"
        "<!-- bench:steps -->\nold\n<!-- /bench:steps -->\ntail\n"
    )

    updated = replace_section(text, "steps", "new")

    assert updated == text.replace("\nold\n", "\nnew\n")


def test_replace_section_appends_a_missing_section() -> None:
    updated = replace_section("# Perf\n", "steps", "body")

    assert updated == "# Perf\n\n<!-- bench:steps -->\nbody\n<!-- /bench:steps -->\n"
