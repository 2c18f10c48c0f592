"""Presenting benchmark figures: a rich table on the terminal, JSON results, docs sections.

Every benchmark writes `bench/results/<name>.json` and refreshes its own section of
docs/performance.md, delimited by `<!-- bench:<name> -->` and `<!-- /bench:<name> -->`, so
that benchmarks run one at a time (`python -m bench steps`) leave the others' tables alone.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
PERFORMANCE_DOC = ROOT / "docs" / "performance.md"

DOC_HEADER = """# Performance

Figures measured with `make bench` (`python -m bench`) on the sandbox cluster
(`agentpool_sandbox`), which counts every request it serves by client (User-Agent) and by pool
at `/sandbox/v1/stats`. Counts are therefore taken by the API server, not by the operator.
Sections between `bench:` markers are rewritten by the benchmarks; edit the text outside them.
"""


@dataclass(frozen=True)
class Row:
    """One figure in both modes; `met` is None when the figure has no target."""

    figure: str
    baseline: str
    candidate: str
    target: str = ""
    met: bool | None = None

    @property
    def verdict(self) -> str:
        return {True: "yes", False: "NO", None: ""}[self.met]

    def cells(self) -> tuple[str, ...]:
        return (self.figure, self.baseline, self.candidate, self.target, self.verdict)


@dataclass(frozen=True)
class WideRow:
    """One figure in any number of configurations; `met` is None when it has no target."""

    figure: str
    values: tuple[str, ...]
    target: str = ""
    met: bool | None = None

    @property
    def verdict(self) -> str:
        return {True: "PASS", False: "MISS", None: ""}[self.met]

    def cells(self) -> tuple[str, ...]:
        return (self.figure, *self.values, self.target, self.verdict)


def machine_notes() -> str:
    return (
        f"{os.cpu_count()} CPUs ({platform.machine()}, shared and noisy), "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )


def today() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


def print_table(title: str, columns: Sequence[str], rows: Sequence[Row | WideRow]) -> None:
    """`columns`: headers of the figure and value columns (target and met follow)."""
    table = Table(title=title, title_justify="left")
    for header in (*columns, "target", "met"):
        table.add_column(header, overflow="fold")
    for row in rows:
        style = "red" if row.met is False else None
        table.add_row(*row.cells(), style=style)
    # Wide enough for the figures when piped (rich assumes 80 columns without a terminal).
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    console.print(table)


def markdown_table(columns: Sequence[str], rows: Sequence[Row | WideRow]) -> str:
    headers = [*columns, "target", "met"]
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---" for _ in headers) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row.cells()) + " |")
    return "\n".join(lines)


def write_results(name: str, document: dict[str, Any], directory: Path = RESULTS) -> Path:
    """Write `<directory>/<name>.json` atomically (a half-written file is never read)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    partial = path.with_suffix(".json.tmp")
    partial.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    partial.replace(path)
    return path


def replace_section(text: str, name: str, body: str) -> str:
    """`text` with the `bench:<name>` section set to `body` (appended when absent)."""
    begin, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    section = f"{begin}\n{body.strip()}\n{end}"
    start = text.find(begin)
    stop = text.find(end, start)
    if start < 0 or stop < 0:
        return text.rstrip() + "\n\n" + section + "\n"
    return text[:start] + section + text[stop + len(end) :]


def write_section(name: str, body: str, doc: Path = PERFORMANCE_DOC) -> None:
    text = doc.read_text() if doc.exists() else DOC_HEADER
    doc.write_text(replace_section(text, name, body))


@dataclass(frozen=True)
class Benchmark:
    """What names one benchmark in its results and its docs section."""

    name: str
    command: str
    title: str  # of the terminal table
    columns: Sequence[str]


def section_heading(bench: Benchmark, heading: str, rows: Sequence[Row], seconds: float) -> str:
    """A docs section's heading, how it was run, and its table: every section opens so."""
    return f"""{section_opening(bench, heading, seconds)}
{markdown_table(bench.columns, rows)}
"""


def section_opening(bench: Benchmark, heading: str, seconds: float) -> str:
    """A docs section's heading and how it was run."""
    return f"""## {heading}

Command: `{bench.command}` ({seconds:.0f} s). Measured {today()} on {machine_notes()}.
"""


def publish(
    bench: Benchmark,
    rows: Sequence[Row],
    failures: list[str],
    figures: dict[str, Any],
    *,
    seconds: float,
    scale: Any,
    out: Path,
    section: str | None,
) -> dict[str, Any]:
    """Print the table, write `<out>/<name>.json` and, unless `section` is None, the docs.

    `scale` is the benchmark's dataclass of workload sizes; `figures` its own results.
    """
    print_table(bench.title, bench.columns, rows)
    table = [asdict(row) for row in rows]
    return record(
        bench, table, failures, figures, seconds=seconds, scale=scale, out=out, section=section
    )


def record(
    bench: Benchmark,
    table: Any,
    failures: list[str],
    figures: dict[str, Any],
    *,
    seconds: float,
    scale: Any,
    out: Path,
    section: str | None,
) -> dict[str, Any]:
    """Write `<out>/<name>.json` (with `table`, the figures as shown) and the docs section."""
    document: dict[str, Any] = {
        "name": bench.name,
        "date": today(),
        "machine": machine_notes(),
        "command": bench.command,
        "seconds": round(seconds, 1),
        "scale": asdict(scale),
        **figures,
        "table": table,
        "failures": failures,
    }
    write_results(bench.name, document, out)
    if section is not None:
        write_section(bench.name, section)
    return document
