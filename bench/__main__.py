"""`python -m bench [agents|steps|pressure|all] [--quick]`: sandbox benchmarks (`make bench`).

Each benchmark is a module of this package with `async def run(out: Path) -> dict`: it prints
its table, writes `<out>/<name>.json` and refreshes its section of docs/performance.md; for
`--quick` it also has `Scale.quick()` and `run_scaled(out, scale, write_doc=False)`. A
benchmark reports correctness failures in the returned document's `failures` list; the command
exits 1 when any benchmark has one (a slow figure is never a failure).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import logging
import sys
from pathlib import Path
from typing import Any

from bench.report import RESULTS

BENCHMARKS = ("agents", "steps", "pressure")


async def run_benchmark(name: str, out: Path, quick: bool) -> dict[str, Any]:
    module = importlib.import_module(f"bench.{name}")
    document: dict[str, Any]
    if quick:
        # A smoke run of the same workloads; it must not overwrite the published tables.
        document = await module.run_scaled(out, module.Scale.quick(), write_doc=False)
    else:
        document = await module.run(out)
    return document


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("which", nargs="?", default="all", choices=(*BENCHMARKS, "all"))
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory for <name>.json")
    parser.add_argument(
        "--quick", action="store_true", help="smaller workloads; docs/performance.md untouched"
    )
    args = parser.parse_args(argv)
    # kopf logs every handler call at INFO: that would drown the tables.
    logging.basicConfig(level=logging.WARNING)
    names = BENCHMARKS if args.which == "all" else (args.which,)
    failures: list[str] = []
    for name in names:
        if importlib.util.find_spec(f"bench.{name}") is None:
            print(f"skipped {name}: bench/{name}.py is not there yet", file=sys.stderr)
            continue
        document = asyncio.run(run_benchmark(name, args.out, args.quick))
        failures += [f"{name}: {failure}" for failure in document.get("failures") or []]
    for failure in failures:
        print(f"FAILED {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
