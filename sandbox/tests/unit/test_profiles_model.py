"""Profile documents: parsing, validation messages, timelines and rendered pod status."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest

from agentpool_sandbox import profiles
from agentpool_sandbox.profiles import PodHistory, ProfileError, render_status

POD = {
    "metadata": {"name": "agent-1", "namespace": "ci", "uid": "0123456789abcdef"},
    "spec": {"containers": [{"name": "jnlp", "image": "agent:1"}, {"name": "tools", "image": "t"}]},
}


def _profile(doc: object) -> profiles.Profile:
    return profiles.parse_document({"profiles": {"p": doc}}, "test").profiles["p"]


def test_builtins_are_the_five_documented_profiles() -> None:
    names = profiles.builtin().names()

    assert names == [
        "crash-loop",
        "image-pull-backoff",
        "standard",
        "unschedulable",
        "virtual-kubelet",
    ]


def test_standard_finishes_quickly_and_running() -> None:
    standard = profiles.builtin().profiles["standard"]

    steps = list(standard.timeline(random.Random(0)))

    assert sum(step.duration for step in steps) <= 0.3
    assert steps[-1].phase == "Running"
    assert steps[-1].containers.ready


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"steps": [{"phase": "Nope", "containers": {"state": "none"}}]}, "phase"),
        ({"steps": [{"phase": "Pending", "containers": {"state": "sleeping"}}]}, "state"),
        ({"steps": [{"phase": "Pending"}]}, "containers: required"),
        (
            {"steps": [{"phase": "Pending", "duration": "soon", "containers": {"state": "none"}}]},
            "duration",
        ),
        (
            {"steps": [{"phase": "Pending", "chance": "3/2", "containers": {"state": "none"}}]},
            "chance",
        ),
        ({"steps": [{"phase": "Pending", "colour": 1, "containers": {"state": "none"}}]}, "colour"),
        ({"steps": []}, "at least one step"),
        (
            {
                "steps": [
                    {
                        "phase": "Pending",
                        "conditions": {"Happy": "True"},
                        "containers": {"state": "none"},
                    }
                ]
            },
            "Happy",
        ),
        (
            {"steps": [{"phase": "Pending", "containers": {"state": "waiting", "ready": True}}]},
            "ready",
        ),
    ],
)
def test_invalid_profiles_name_the_problem(doc: object, message: str) -> None:
    with pytest.raises(ProfileError, match=message):
        _profile(doc)


def test_durations_and_fractions_parse() -> None:
    assert profiles.parse_duration("150ms", "x") == pytest.approx(0.15)
    assert profiles.parse_duration("2s", "x") == 2.0
    assert profiles.parse_duration(1.5, "x") == 1.5
    assert profiles.parse_chance("14/15", "x") == pytest.approx(14 / 15)


def test_chance_step_is_played_by_that_fraction_of_pods() -> None:
    profile = _profile(
        {
            "steps": [
                {"phase": "Pending", "chance": 0.0, "containers": {"state": "none"}},
                {"phase": "Running", "containers": {"state": "running"}},
            ]
        }
    )

    phases = [step.phase for step in profile.timeline(random.Random(1))]

    assert phases == ["Running"]


def test_loop_repeats_after_steps() -> None:
    crash = profiles.builtin().profiles["crash-loop"]

    steps = itertools.islice(crash.timeline(random.Random(0)), 9)
    states = [step.containers.state for step in steps]

    assert states == ["waiting", "running", "terminated"] + ["waiting", "running", "terminated"] * 2


def test_file_profiles_override_and_extend_builtins(tmp_path: Path) -> None:
    path = tmp_path / "extra.yaml"
    path.write_text(
        "profiles:\n"
        "  standard: {steps: [{phase: Failed, containers: {state: none}}]}\n"
        "  slow: {steps: [{phase: Pending, duration: 1h, containers: {state: none}}]}\n"
    )

    loaded = profiles.load(path)

    assert loaded.profiles["standard"].steps[0].phase == "Failed"
    assert "slow" in loaded.names() and "crash-loop" in loaded.names()


def test_running_status_templates_every_container() -> None:
    step = profiles.builtin().profiles["standard"].steps[-1]

    status = render_status(
        POD,
        step,
        PodHistory(),
        now="2026-01-01T00:00:00Z",
        pod_ip="10.244.0.2",
        host_ip="127.0.0.1",
    )

    assert status["phase"] == "Running"
    assert [c["name"] for c in status["containerStatuses"]] == ["jnlp", "tools"]
    assert all(c["ready"] and "running" in c["state"] for c in status["containerStatuses"])
    assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "True"
    assert status["podIP"] == "10.244.0.2"


def test_messages_name_pod_container_and_image() -> None:
    step = profiles.builtin().profiles["image-pull-backoff"].loop[1]

    status = render_status(POD, step, PodHistory(), now="t", pod_ip="ip", host_ip="h")

    waiting = status["containerStatuses"][0]["state"]["waiting"]
    assert waiting == {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "agent:1"'}
    ready = {c["type"]: c for c in status["conditions"]}["Ready"]
    assert ready["message"] == "containers with unready status: [jnlp tools]"


def test_crash_loop_counts_restarts_and_keeps_last_state() -> None:
    crash = profiles.builtin().profiles["crash-loop"]
    history = PodHistory()
    statuses = [
        render_status(POD, step, history, now=f"t{i}", pod_ip="ip", host_ip="h")
        for i, step in zip(range(8), crash.timeline(random.Random(0)), strict=False)
    ]

    counts = [s["containerStatuses"][0]["restartCount"] for s in statuses]

    assert counts == [0, 0, 0, 0, 1, 1, 1, 2]
    assert statuses[4]["containerStatuses"][0]["lastState"]["terminated"]["exitCode"] == 1


def test_condition_transition_time_changes_only_with_status() -> None:
    standard = profiles.builtin().profiles["standard"]
    history = PodHistory()
    first = render_status(POD, standard.steps[1], history, now="t1", pod_ip="ip", host_ip="h")
    second = render_status(POD, standard.steps[2], history, now="t2", pod_ip="ip", host_ip="h")

    def times(status: dict[str, object]) -> dict[str, object]:
        return {c["type"]: c["lastTransitionTime"] for c in status["conditions"]}  # type: ignore[attr-defined]

    assert times(first)["PodScheduled"] == times(second)["PodScheduled"] == "t1"
    assert times(second)["Ready"] == "t2"


def test_unschedulable_has_no_node_or_container_statuses() -> None:
    step = profiles.builtin().profiles["unschedulable"].steps[0]

    status = render_status(POD, step, PodHistory(), now="t", pod_ip="ip", host_ip="h")

    assert not step.scheduled
    assert "containerStatuses" not in status and "hostIP" not in status
    scheduled = status["conditions"][0]
    assert scheduled["reason"] == "Unschedulable"
    assert scheduled["message"].startswith("0/1 nodes are available: ")


def test_profile_and_seed_come_from_annotations() -> None:
    pod = {"metadata": {"annotations": {profiles.PROFILE_ANNOTATION: "crash-loop"}}}

    assert profiles.profile_name(pod) == "crash-loop"
    assert profiles.profile_name({"metadata": {}}) == "standard"
    seeded = {"metadata": {"annotations": {profiles.SEED_ANNOTATION: "7"}}}
    assert profiles.pod_rng(seeded).random() == profiles.pod_rng(seeded).random()
