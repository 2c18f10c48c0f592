"""The package ships the CRDs and examples; without the sandbox extra, one line says so."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import agentpool
from agentpool import cli, demo

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["crds", "examples"])
def test_the_package_holds_the_repositorys_crds_and_examples(name: str) -> None:
    shipped = Path(agentpool.__file__).parent / name

    assert sorted(p.name for p in shipped.glob("*.yaml")) == sorted(
        p.name for p in (ROOT / name).glob("*.yaml")
    )
    assert all(
        (shipped / p.name).read_bytes() == p.read_bytes() for p in (ROOT / name).glob("*.yaml")
    )
    assert demo.PACKAGE / name == shipped


@pytest.mark.parametrize("command", ["demo", "sandbox"])
def test_without_the_sandbox_extra_one_line_says_what_to_install(
    command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        return None if name == "kubernetes_validate" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)

    result = CliRunner().invoke(cli.main, [command])

    assert result.exit_code == 1
    assert result.output == (
        f"Error: agentpool {command} needs the sandbox extra (kubernetes_validate not "
        "installed): pip install 'agentpool-operator[sandbox]' (from a clone: pip install "
        "'.[sandbox]')\n"
    )
