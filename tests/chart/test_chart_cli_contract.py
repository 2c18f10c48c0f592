"""What the chart and the image assume of the operator's CLI: the flags it renders, and that
`agentpool run` starts with runtime dependencies only (the image has no sandbox distribution)."""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import click
import pytest

Render = Callable[..., list[dict[str, Any]]]

VALUE_SETS: dict[str, dict[str, Any]] = {
    "default": {},
    "namespaced": {"watchNamespaces": ["team-a", "team-b"]},
    "two-replicas": {"replicaCount": 2},
    "plain-verbose": {"logFormat": "plain", "verbose": True},
}
SANDBOX_ONLY_MODULES = ("agentpool_sandbox", "jsonschema", "jsonpatch", "kubernetes_validate")


def run_command() -> click.Command:
    main = importlib.import_module("agentpool.cli").main
    assert isinstance(main, click.Group)
    command = main.get_command(click.Context(main), "run")
    assert command is not None, "`agentpool run` exists"
    return command


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_agentpool_run_accepts_every_flag_the_chart_renders(
    render: Render, values: dict[str, Any]
) -> None:
    deployment = next(o for o in render(values) if o["kind"] == "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]

    context = run_command().make_context("run", list(args))

    assert context.params


def test_agentpool_run_imports_no_sandbox_dependency() -> None:
    probe = (
        "import sys, agentpool.cli\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {SANDBOX_ONLY_MODULES!r}))"
    )

    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )

    assert done.stdout.strip() == "[]", "the image has no sandbox distribution; import these lazily"
