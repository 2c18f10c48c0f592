"""A BuildStep status update as the merge-patch body the API server receives."""

from __future__ import annotations

from datetime import UTC, datetime

from agentpool.model import StepPhase
from agentpool.steps.runs import AgentRef
from agentpool.steps.step_status import REMOVED, StepStatus

T0 = datetime(2026, 11, 24, 10, 0, 0, 123456, tzinfo=UTC)


def test_an_empty_update_patches_nothing() -> None:
    assert StepStatus().patch() == {}


def test_a_final_status_names_every_field_as_the_crd_does() -> None:
    status = StepStatus(
        phase=StepPhase.FAILED,
        reason="ScriptFailed",
        message="exited with code 3",
        agent="pod-a",
        session="n1",
        exit_code=3,
        started_at=T0,
        finished_at=T0,
        log_bytes=0,
        log_tail="",
    ).counted(2, 5)

    assert status.patch() == {
        "attempts": 2,
        "observedGeneration": 5,
        "phase": "Failed",
        "reason": "ScriptFailed",
        "message": "exited with code 3",
        "agent": "pod-a",
        "session": "n1",
        "exitCode": 3,
        "startedAt": "2026-11-24T10:00:00.123456Z",
        "finishedAt": "2026-11-24T10:00:00.123456Z",
        "logBytes": 0,
        "logTail": "",
    }


def test_zero_and_empty_values_are_written_none_is_not() -> None:
    assert StepStatus(exit_code=0, log_tail="").patch() == {"exitCode": 0, "logTail": ""}
    assert StepStatus().counted(0, None).patch() == {"attempts": 0}


def test_a_removed_agent_is_null_in_the_merge_patch() -> None:
    assert StepStatus(agent=REMOVED).patch() == {"agent": None}


def test_queued_and_running_say_why() -> None:
    assert StepStatus.queued("waiting for a free agent").patch() == {
        "phase": "Queued",
        "reason": "Queued",
        "message": "waiting for a free agent",
    }
    assert StepStatus.running(AgentRef("pod-a", "n1")).patch() == {
        "phase": "Running",
        "reason": "Started",
        "message": "running on agent pod-a",
        "agent": "pod-a",
        "session": "n1",
    }


def test_a_rerun_step_is_queued_again_without_what_its_earlier_attempt_left() -> None:
    status = StepStatus.rerun("RerunAfterAgentLost", "agent a was lost").counted(2, 1)

    assert status.patch() == {
        "attempts": 2,
        "observedGeneration": 1,
        "phase": "Queued",
        "reason": "RerunAfterAgentLost",
        "message": "agent a was lost",
        "agent": None,
        "session": None,
        "exitCode": None,
        "finishedAt": None,
        "logBytes": None,
        "logTail": None,
    }
