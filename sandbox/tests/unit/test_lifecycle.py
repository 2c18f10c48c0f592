"""The kubelet's rules once a container exits: restart policy, back-off, pod phase."""

from __future__ import annotations

import pytest

from agentpool_sandbox import lifecycle
from agentpool_sandbox.lifecycle import ContainerRun


@pytest.mark.parametrize(
    ("policy", "code", "restart"),
    [
        ("Always", 0, True),
        ("Always", 1, True),
        ("OnFailure", 0, False),
        ("OnFailure", 2, True),
        ("Never", 0, False),
        ("Never", 1, False),
    ],
)
def test_restart_policy(policy: str, code: int, restart: bool) -> None:
    assert lifecycle.restarts(policy, code) is restart


def test_back_off_is_immediate_then_doubles_from_10s_to_5m() -> None:
    waits = [lifecycle.backoff_seconds(crash) for crash in range(1, 9)]

    assert waits == [0, 10, 20, 40, 80, 160, 300, 300]
    assert [lifecycle.describe_seconds(w) for w in waits[1:5]] == ["10s", "20s", "40s", "1m20s"]
    assert lifecycle.describe_seconds(300) == "5m0s"


def test_signals_are_128_plus_n() -> None:
    assert (lifecycle.exit_code(-9), lifecycle.exit_code(3)) == (137, 3)


def test_phase_follows_the_containers() -> None:
    done, failed, running = (
        ContainerRun("a", "i", state="terminated"),
        ContainerRun("b", "i", state="terminated", exit_code=1),
        ContainerRun("c", "i"),
    )

    assert lifecycle.phase([done]) == "Succeeded"
    assert lifecycle.phase([done, failed]) == "Failed"
    assert lifecycle.phase([done, running]) == "Running"


def test_restart_keeps_the_last_run_and_counts() -> None:
    run = ContainerRun("c", "i", started_at="t0", container_ids=["id-0"])

    wait = lifecycle.exited(run, 1, "t1", "Always")
    lifecycle.restarted(run, "t2", "id-1")

    assert wait == 0
    assert (run.state, run.restart_count, run.started_at) == ("running", 1, "t2")
    assert run.last_terminated == {
        "exitCode": 1,
        "reason": "Error",
        "startedAt": "t0",
        "finishedAt": "t1",
        "containerID": "id-0",
    }


def test_unknown_restart_policy_reads_as_always() -> None:
    assert lifecycle.restart_policy({"spec": {}}) == "Always"
    assert lifecycle.restart_policy({"spec": {"restartPolicy": "Never"}}) == "Never"
