"""Exec request rules that need no socket: protocol choice, container choice, status frames."""

from __future__ import annotations

from typing import Any

import pytest
from multidict import MultiDict

from agentpool_sandbox import exec as exec_channel
from agentpool_sandbox.errors import ApiError


def _pod(*names: str, running: bool = True) -> dict[str, Any]:
    state = {"running": {}} if running else {"waiting": {"reason": "ContainerCreating"}}
    return {
        "metadata": {"name": "agent"},
        "spec": {"nodeName": "sandbox-node", "containers": [{"name": n} for n in names]},
        "status": {
            "phase": "Pending",
            "containerStatuses": [{"name": n, "state": state} for n in names],
        },
    }


def test_client_preference_order_wins() -> None:
    assert (
        exec_channel.choose_protocol("v5.channel.k8s.io,v4.channel.k8s.io") == "v5.channel.k8s.io"
    )
    assert (
        exec_channel.choose_protocol("v4.channel.k8s.io, v5.channel.k8s.io") == "v4.channel.k8s.io"
    )
    assert exec_channel.choose_protocol(None) == "channel.k8s.io"


def test_unsupported_protocols_are_refused() -> None:
    with pytest.raises(ApiError) as error:
        exec_channel.choose_protocol("v9.channel.k8s.io")

    assert error.value.code == 400


def test_command_is_required() -> None:
    with pytest.raises(ApiError, match="at least 1 command"):
        exec_channel.parse_options(MultiDict(stdout="true"))


def test_options_read_repeated_command() -> None:
    options = exec_channel.parse_options(
        MultiDict([("command", "sh"), ("command", "-c"), ("command", "true"), ("stdin", "1")])
    )

    assert options.command == ("sh", "-c", "true") and options.stdin and not options.tty


def test_container_defaults_only_when_there_is_one() -> None:
    assert exec_channel.select_container(_pod("main"), None) == "main"
    with pytest.raises(ApiError, match=r"choose one of: \[a b\]"):
        exec_channel.select_container(_pod("a", "b"), None)
    with pytest.raises(ApiError, match="container c is not valid for pod agent"):
        exec_channel.select_container(_pod("a", "b"), "c")


def test_running_container_is_enough_even_while_pending() -> None:
    exec_channel.require_running(_pod("main"), "main")
    with pytest.raises(ApiError, match="container not found"):
        exec_channel.require_running(_pod("main", running=False), "main")


def test_exit_status_frames() -> None:
    assert exec_channel.exit_status(0, ["true"]) == {"metadata": {}, "status": "Success"}
    failure = exec_channel.exit_status(3, ["sh", "-c", "exit 3"])
    assert failure["reason"] == "NonZeroExitCode"
    assert failure["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]
    assert failure["message"].endswith("[sh -c exit 3], exit code 3")
    assert exec_channel.exit_code(-9) == 137
