"""The operator's distribution: the CRDs and examples ship in it, the sandbox does not;
without the sandbox distribution, `agentpool demo` and `agentpool sandbox` say what to install."""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import agentpool
from agentpool import cli

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIR = ROOT / "operator" / "agentpool"


@pytest.mark.parametrize("name", ["crds", "examples"])
def test_the_package_holds_the_repositorys_crds_and_examples(name: str) -> None:
    shipped = Path(agentpool.__file__).parent / name

    assert sorted(p.name for p in shipped.glob("*.yaml")) == sorted(
        p.name for p in (ROOT / name).glob("*.yaml")
    )
    assert all(
        (shipped / p.name).read_bytes() == p.read_bytes() for p in (ROOT / name).glob("*.yaml")
    )


def test_the_operators_distribution_holds_no_sandbox() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    setuptools = project["tool"]["setuptools"]

    # Only operator/ is searched for packages, and nothing of the sandbox lives there.
    assert setuptools["packages"]["find"]["where"] == ["operator"]
    assert [p for p in PACKAGE_DIR.rglob("*sandbox*") if "__pycache__" not in p.parts] == []
    assert not any("sandbox" in pattern for pattern in setuptools["package-data"]["agentpool"])
    assert "sandbox" not in project["project"]["optional-dependencies"]


def no_entry_points(**_: Any) -> importlib.metadata.EntryPoints:
    return importlib.metadata.EntryPoints(())


@pytest.mark.parametrize("args", [["demo"], ["sandbox"], ["demo", "--timeout", "5"]])
def test_without_the_sandbox_distribution_one_line_says_what_to_install(
    args: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importlib.metadata, "entry_points", no_entry_points)

    result = CliRunner().invoke(cli.main, args)

    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == (
        f"agentpool {args[0]} needs the sandbox distribution (agentpool-sandbox): "
        "pip install ./sandbox from a clone of the repository\n"
    )


def test_without_the_sandbox_distribution_the_help_lists_its_commands_as_not_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(importlib.metadata, "entry_points", no_entry_points)

    result = CliRunner().invoke(cli.main, ["--help"])

    assert result.exit_code == 0
    assert "demo     [not installed]" in result.output
    assert "sandbox  [not installed]" in result.output
