"""The benchmark's reading of sandbox stats and its docs sections."""

from __future__ import annotations

import json
import math
from pathlib import Path

from bench.harness import OPERATOR_CLIENT, StatsView, percentile
from bench.report import (
    Benchmark,
    Row,
    publish,
    replace_section,
    section_heading,
    write_section,
)

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


def test_publish_writes_the_results_and_the_docs_section(tmp_path: Path) -> None:
    bench = Benchmark("demo", "python -m bench demo", "Demo", ("figure", "off", "on"))
    rows = [Row("requests", "9", "3", "< 5", True)]
    doc = tmp_path / "performance.md"
    section = section_heading(bench, "Demo", rows, 2.0) + "Body.\n"

    figures = {"settings": {"k": 1}}
    scale = Row("x", "y", "z")
    document = publish(
        bench, rows, [], figures, seconds=2.04, scale=scale, out=tmp_path, section=None
    )
    write_section(bench.name, section, doc)

    written = json.loads((tmp_path / "demo.json").read_text())
    assert written == document
    assert (written["name"], written["seconds"], written["settings"]) == ("demo", 2.0, {"k": 1})
    assert written["table"][0]["candidate"] == "3"
    assert "Command: `python -m bench demo` (2 s)" in doc.read_text()
    assert "| requests | 9 | 3 | < 5 | yes |" in doc.read_text()
