"""builds (pure): manifests, step order, verdicts, build rows, re-run bodies, tails."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from agentpool.builds import (
    CANCEL_ANNOTATION,
    ManifestError,
    StepView,
    build_rows,
    in_order,
    last_lines,
    parse_manifests,
    prepare_steps,
    rerun_body,
    status_line,
    verdict,
    waiting_for,
)

STEP = """\
apiVersion: agentpool.dev/v1alpha1
kind: BuildStep
metadata: {name: %s}
spec: {pool: demo, script: echo %s}
"""


def body(name: str, **status: Any) -> dict[str, Any]:
    spec = {"pool": "demo", "script": "true", **status.pop("spec", {})}
    return {
        "metadata": {
            "name": name,
            "namespace": "ci",
            "uid": f"uid-{name}",
            **status.pop("meta", {}),
        },
        "spec": spec,
        "status": status,
    }


def view(name: str, **status: Any) -> StepView:
    return StepView.from_body(body(name, **status))


# --- manifests -----------------------------------------------------------------------------


def test_multi_document_yaml_gives_the_steps_in_order() -> None:
    text = STEP % ("a", "1") + "---\n" + STEP % ("b", "2")

    steps = parse_manifests(text, "f.yaml")

    assert [s["metadata"]["name"] for s in steps] == ["a", "b"]


def test_a_v1_list_is_unpacked() -> None:
    item = (
        '{"apiVersion": "agentpool.dev/v1alpha1", "kind": "BuildStep", '
        '"metadata": {"generateName": "x-"}, "spec": {"pool": "p", "script": "true"}}'
    )
    text = '{"apiVersion": "v1", "kind": "List", "items": [' + item + "]}"

    steps = parse_manifests(text, "list.json")

    assert steps[0]["metadata"] == {"generateName": "x-"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kind: ConfigMap\napiVersion: v1\n", "document 1 is a ConfigMap, not a BuildStep"),
        ("a: [1\n", "f.yaml is not valid YAML at line 2"),
        ("", "f.yaml holds no BuildStep"),
        (
            "apiVersion: agentpool.dev/v1\nkind: BuildStep\n",
            "has apiVersion 'agentpool.dev/v1': use agentpool.dev/v1alpha1",
        ),
        (
            "apiVersion: agentpool.dev/v1alpha1\nkind: BuildStep\nspec: {pool: p, script: x}\n",
            "has no metadata.name: give a name or a generateName",
        ),
        (
            "apiVersion: agentpool.dev/v1alpha1\nkind: BuildStep\nmetadata: {name: s}\n"
            "spec: {pool: p, script: ''}\n",
            "document 1 (s): spec.script: is empty",
        ),
        ("kind: List\napiVersion: v1\n", "is a List without items"),
    ],
)
def test_bad_manifests_say_what_to_fix(text: str, message: str) -> None:
    with pytest.raises(ManifestError) as raised:
        parse_manifests(text, "f.yaml")

    assert message in str(raised.value)


def test_prepare_sets_build_namespace_and_the_given_order() -> None:
    manifests = parse_manifests(STEP % ("b", "1") + "---\n" + STEP % ("a", "2"), "f")

    namespace, bodies = prepare_steps(manifests, namespace=None, build="ci-7")

    assert namespace == "default"
    assert [
        (b["metadata"]["namespace"], b["spec"]["build"], b["spec"]["order"]) for b in bodies
    ] == [
        ("default", "ci-7", 0),
        ("default", "ci-7", 1),
    ]


def test_prepare_keeps_explicit_orders_and_the_manifests_namespace() -> None:
    manifests = [body("a", spec={"order": 5}), body("b")]

    namespace, bodies = prepare_steps(manifests, namespace=None, build=None)

    assert namespace == "ci"
    assert [b["spec"].get("order") for b in bodies] == [5, None]
    assert "build" not in bodies[0]["spec"]


def test_prepare_refuses_a_namespace_that_contradicts_the_flag() -> None:
    with pytest.raises(ManifestError, match="names namespace 'ci' but --namespace is 'prod'"):
        prepare_steps([body("a")], namespace="prod", build=None)


# --- one step ------------------------------------------------------------------------------


def test_status_line_of_a_success_and_of_a_failure() -> None:
    ok = view("compile", phase="Succeeded", exitCode=0, agent="pod-1", startedAt="t")
    failed = view(
        "test",
        phase="Failed",
        exitCode=2,
        agent="pod-1",
        startedAt="t",
        reason="ScriptFailed",
        message="the script exited with code 2",
    )
    skipped = view("publish", phase="Skipped", reason="PreviousStepFailed", message="test failed")

    assert status_line(ok) == "step compile Succeeded (exit 0) on agent pod-1"
    assert status_line(failed) == (
        "step test Failed (exit 2) on agent pod-1: ScriptFailed: the script exited with code 2"
    )
    assert status_line(skipped) == "step publish Skipped: PreviousStepFailed: test failed"


def test_a_step_has_started_once_running_or_final_after_a_start() -> None:
    assert view("a", phase="Running", agent="p").has_started
    assert not view("b", phase="Queued").has_started
    assert not view("c", agent="p", message="starting on agent p").has_started
    assert not view("d", phase="Cancelled", agent="p").has_started
    assert view("e", phase="Failed", agent="p", startedAt="t").has_started


def test_dir_id_follows_the_attempt() -> None:
    assert view("a").dir_id == "uid-a.1"
    assert view("a", attempts=2).dir_id == "uid-a.2"


def test_waiting_for_names_the_phase_and_reason() -> None:
    assert waiting_for(view("a", phase="Pending", reason="PoolNotFound")) == "Pending: PoolNotFound"
    assert waiting_for(view("a")).startswith("not scheduled yet")
    queued = view("a", phase="Queued", reason="Queued", message="starting on agent p")
    assert waiting_for(queued) == "Queued: starting on agent p"


@pytest.mark.parametrize(
    ("data", "count", "expected"),
    [
        (b"1\n2\n3\n", 2, b"2\n3\n"),
        (b"1\n2\n3", 2, b"2\n3"),
        (b"1\n2\n", 5, b"1\n2\n"),
        (b"1\n2\n", 0, b""),
        (b"", 3, b""),
    ],
)
def test_last_lines(data: bytes, count: int, expected: bytes) -> None:
    assert last_lines(data, count) == expected


# --- order and verdicts --------------------------------------------------------------------


def test_in_order_is_spec_order_then_the_order_given() -> None:
    steps = [
        view("z", spec={"build": "x", "order": 1}),
        view("b", spec={"build": "x", "order": 2}),
        view("a", spec={"build": "x", "order": 2}),
    ]

    assert [s.name for s in in_order(steps, given=["z", "b", "a"])] == ["z", "b", "a"]
    assert [s.name for s in in_order(steps)] == ["z", "a", "b"]


def test_verdict_is_the_first_failed_scripts_exit_code() -> None:
    steps = [
        view("a", phase="Succeeded", exitCode=0),
        view("b", phase="Failed", exitCode=3, reason="ScriptFailed", message="exited 3"),
        view("c", phase="Skipped", reason="PreviousStepFailed"),
        view("d", phase="Failed", exitCode=9, reason="ScriptFailed"),
    ]

    result = verdict(steps)

    assert (result.code, result.step, result.explanation) == (3, "b", "ScriptFailed: exited 3")


@pytest.mark.parametrize(
    ("step", "explanation"),
    [
        (view("b", phase="Failed", reason="AgentLost", message="pod gone"), "AgentLost: pod gone"),
        (view("b", phase="Failed", exitCode=143, reason="Timeout"), "Timeout"),
        (view("b", phase="Cancelled", reason="Cancelled"), "Cancelled"),
    ],
)
def test_infrastructure_failures_exit_1_with_the_reason(step: StepView, explanation: str) -> None:
    assert verdict([view("a", phase="Succeeded", exitCode=0), step]) == verdict([step])
    assert (verdict([step]).code, verdict([step]).explanation) == (1, explanation)


def test_all_succeeded_is_0() -> None:
    assert verdict([view("a", phase="Succeeded", exitCode=0)]).code == 0


# --- builds --------------------------------------------------------------------------------

NOW = datetime(2026, 12, 4, 12, 0, 30, tzinfo=UTC)


def test_build_rows_group_steps_by_build() -> None:
    steps = [
        view(
            "r1",
            spec={"build": "rel", "order": 1},
            phase="Succeeded",
            agent="pod-1",
            startedAt="2026-12-04T12:00:00.000000Z",
            finishedAt="2026-12-04T12:00:02.000000Z",
        ),
        view(
            "r2",
            spec={"build": "rel", "order": 2},
            phase="Failed",
            agent="pod-1",
            startedAt="2026-12-04T12:00:02.500000Z",
            finishedAt="2026-12-04T12:00:05.000000Z",
        ),
        view(
            "h1",
            spec={"build": "hello"},
            phase="Running",
            agent="pod-2",
            startedAt="2026-12-04T12:00:20Z",
        ),
        view("q1", spec={"build": "queued"}, phase="Queued"),
    ]

    rows = {row.build: row for row in build_rows(steps, NOW)}

    rel = rows["rel"]
    assert (rel.phase, rel.done, rel.total, rel.agent, rel.duration) == (
        "Failed",
        2,
        2,
        "pod-1",
        "5s",
    )
    assert rel.started == "2026-12-04T12:00:00Z"
    assert (rows["hello"].phase, rows["hello"].duration) == ("Running", "10s")
    assert (rows["queued"].phase, rows["queued"].done, rows["queued"].started) == ("Queued", 0, "")
    assert next(r.build for r in build_rows(steps, NOW)) == "hello"


def test_a_build_with_a_step_still_to_run_is_running() -> None:
    steps = [
        view(
            "a", spec={"build": "b"}, phase="Succeeded", agent="p", startedAt="2026-12-04T12:00:00Z"
        ),
        view("c", spec={"build": "b"}),
    ]

    (row,) = build_rows(steps, NOW)

    assert (row.phase, row.done, row.total) == ("Running", 1, 2)


def test_rerun_body_keeps_the_spec_in_a_new_build_and_drops_the_run() -> None:
    old = body(
        "rel-test",
        spec={"build": "rel", "order": 2},
        phase="Failed",
        meta={
            "resourceVersion": "7",
            "creationTimestamp": "t",
            "generation": 1,
            "labels": {"team": "a"},
            "annotations": {CANCEL_ANNOTATION: "true", "note": "kept"},
        },
    )

    new = rerun_body(old, "rel-2")

    assert new == {
        "apiVersion": "agentpool.dev/v1alpha1",
        "kind": "BuildStep",
        "metadata": {
            "generateName": "rel-test-",
            "namespace": "ci",
            "labels": {"team": "a"},
            "annotations": {"note": "kept"},
        },
        "spec": {"pool": "demo", "script": "true", "build": "rel-2", "order": 2},
    }


def test_rerun_body_reuses_the_generate_name_of_a_generated_step() -> None:
    old = body("compile-x7k2p", meta={"generateName": "compile-"})

    assert rerun_body(old, "b2")["metadata"]["generateName"] == "compile-"
