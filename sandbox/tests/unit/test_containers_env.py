"""Container environment, argv and working directory resolution."""

from __future__ import annotations

from pathlib import Path

from agentpool_sandbox.containers import (
    container_argv,
    container_environment,
    expand,
    working_directory,
)

POD = {"metadata": {"name": "agent-1", "namespace": "ci", "labels": {"team": "a"}}, "spec": {}}


def test_expand_references_and_escapes() -> None:
    assert expand("$(A)-$(B)-$$(A)", {"A": "1"}) == "1-$(B)-$(A)"


def test_env_literals_refer_to_earlier_entries_and_fields(tmp_path: Path) -> None:
    container = {
        "env": [
            {"name": "A", "value": "x"},
            {"name": "B", "value": "$(A)y"},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "TEAM", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['team']"}}},
        ]
    }

    env = container_environment(POD, container, tmp_path)

    assert (env["B"], env["POD"], env["TEAM"]) == ("xy", "agent-1", "a")
    assert env["HOME"] == str(tmp_path) and env["HOSTNAME"] == "agent-1"


def test_argv_is_command_then_args_expanded() -> None:
    argv = container_argv({"command": ["sh", "-c"], "args": ["echo $(A)"]}, {"A": "hi"})

    assert argv == ["sh", "-c", "echo hi"]


def test_working_dir_is_rerooted_and_cannot_escape(tmp_path: Path) -> None:
    assert (
        working_directory({"workingDir": "/workspace/src"}, tmp_path)
        == (tmp_path / "workspace" / "src").resolve()
    )
    assert working_directory({"workingDir": "/../../etc"}, tmp_path) == tmp_path
    assert working_directory({}, tmp_path) == tmp_path
