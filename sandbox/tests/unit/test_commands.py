"""This distribution adds `agentpool sandbox` and `agentpool demo` to the operator's CLI."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

import agentpool
from agentpool import cli
from agentpool_sandbox import commands, demo


@pytest.mark.parametrize("name", ["sandbox", "demo"])
def test_the_operators_cli_finds_the_command_through_its_entry_point(name: str) -> None:
    found = cli.main.get_command(click.Context(cli.main), name)

    assert found is getattr(commands, name)


def test_the_demo_applies_the_crds_and_examples_the_operators_package_ships() -> None:
    assert Path(agentpool.__file__).parent == demo.OPERATOR_PACKAGE
    assert (demo.OPERATOR_PACKAGE / "crds").is_dir()
    assert (demo.OPERATOR_PACKAGE / "examples").is_dir()
