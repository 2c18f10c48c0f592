from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from agentpool.model import (
    AgentCounts,
    AgentPoolSpec,
    ApiConnectionsSpec,
    ApiConnectionsStatus,
    BuildStepSpec,
    Condition,
    ConditionStatus,
    EnvVar,
    ReadinessSpec,
    RunPolicy,
    SessionsSpec,
    SpecError,
    StepPhase,
    format_duration,
    merge_condition,
    parse_duration,
)

TEMPLATE = {
    "metadata": {"labels": {"team": "ci"}},
    "spec": {
        "containers": [
            {"name": "agent", "image": "busybox"},
            {"name": "docker", "image": "docker:dind"},
        ]
    },
}


def pool(**fields: Any) -> dict[str, Any]:
    return {"template": TEMPLATE, **fields}


def step(**fields: Any) -> dict[str, Any]:
    return {"pool": "demo", "script": "make test", **fields}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("50ms", 0.05),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("1.5s", 1.5),
        ("2m500ms", 120.5),
        ("0s", 0.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "10", "10 m", "1d", "-5s", "m", "1h 30m", "1.s"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="such as 500ms, 30s, 10m or 1h30m"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (0.05, "50ms"), (30, "30s"), (90, "1m30s"), (5400, "1h30m"), (1.5, "1.5s")],
)
def test_format_duration_round_trips(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == pytest.approx(seconds)


def test_pool_defaults_match_the_crd() -> None:
    spec = AgentPoolSpec.from_body(pool())

    assert spec.agent_container == "agent"
    assert spec.container_names == ("agent", "docker")
    assert (spec.min_idle, spec.max_agents, spec.ephemeral) == (0, 10, False)
    assert (spec.idle_timeout, spec.startup_timeout) == (600.0, 300.0)
    assert spec.readiness == ReadinessSpec(tolerate_virtual_kubelet_pending=True)
    assert spec.api_connections == ApiConnectionsSpec(max=32, queue_timeout=30.0)
    assert spec.sessions == SessionsSpec(
        batch_window=0.05, max_steps=100, linger=2.0, poll_interval=2.0
    )


def test_pool_reads_every_field() -> None:
    spec = AgentPoolSpec.from_body(
        pool(
            agentContainer="docker",
            minIdle=2,
            maxAgents=4,
            idleTimeout="1m",
            startupTimeout="90s",
            ephemeral=True,
            readiness={"tolerateVirtualKubeletPending": False},
            apiConnections={"max": 3, "queueTimeout": "5s"},
            sessions={"batchWindow": "0s", "maxSteps": 7, "linger": "1s", "pollInterval": "3s"},
        )
    )

    assert spec.agent_container == "docker"
    assert (spec.min_idle, spec.max_agents, spec.idle_timeout, spec.startup_timeout) == (
        2,
        4,
        60.0,
        90.0,
    )
    assert spec.ephemeral is True
    assert spec.readiness.tolerate_virtual_kubelet_pending is False
    assert spec.api_connections == ApiConnectionsSpec(max=3, queue_timeout=5.0)
    assert spec.sessions == SessionsSpec(
        batch_window=0.0, max_steps=7, linger=1.0, poll_interval=3.0
    )


def test_pool_template_is_a_private_copy() -> None:
    body = copy.deepcopy(pool())

    spec = AgentPoolSpec.from_body(body)
    body["template"]["spec"]["containers"].append({"name": "late", "image": "x"})

    assert len(spec.template["spec"]["containers"]) == 2


def test_pool_spec_is_hashable_and_comparable() -> None:
    assert AgentPoolSpec.from_body(pool()) == AgentPoolSpec.from_body(pool())
    assert hash(AgentPoolSpec.from_body(pool())) == hash(AgentPoolSpec.from_body(pool()))


@pytest.mark.parametrize(
    ("body", "field", "hint"),
    [
        (pool(minIdle=5, maxAgents=2), "spec.minIdle", "lower minIdle or raise maxAgents"),
        (pool(agentContainer="jnlp"), "spec.agentContainer", "found: agent, docker"),
        (pool(idleTimeout="ten minutes"), "spec.idleTimeout", "such as 500ms"),
        (pool(startupTimeout="0s"), "spec.startupTimeout", "longer than zero"),
        (pool(sessions={"pollInterval": "0ms"}), "spec.sessions.pollInterval", "longer than zero"),
        (pool(maxAgents=0), "spec.maxAgents", "at least 1"),
        (pool(minIdle=True), "spec.minIdle", "must be an integer"),
        (pool(apiConnections={"max": "32"}), "spec.apiConnections.max", "must be an integer"),
        (pool(readiness="yes"), "spec.readiness", "must be an object"),
        ({}, "spec.template", "is required"),
        ({"template": {"spec": {"containers": []}}}, "spec.template.spec.containers", "at least"),
        (
            {"template": {"spec": {"containers": [{"image": "x"}]}}},
            "spec.template.spec.containers[0].name",
            "not a container name",
        ),
        (
            {"template": {"spec": {"containers": [{"name": "a"}, {"name": "a"}]}}},
            "spec.template.spec.containers[1].name",
            "duplicate",
        ),
    ],
)
def test_pool_spec_errors_name_the_field_and_the_fix(
    body: dict[str, Any], field: str, hint: str
) -> None:
    with pytest.raises(SpecError) as caught:
        AgentPoolSpec.from_body(body)

    assert caught.value.field == field
    assert hint in caught.value.message
    assert str(caught.value).startswith(f"{field}: ")


def test_step_defaults_match_the_crd() -> None:
    spec = BuildStepSpec.from_body(step(), name="unit-tests")

    assert spec == BuildStepSpec(
        pool="demo",
        build="unit-tests",
        script="make test",
        order=0,
        container=None,
        shell="/bin/sh",
        env=(),
        working_dir=None,
        timeout=3600.0,
        run_policy=RunPolicy.ON_SUCCESS,
        retries=1,
    )


def test_step_reads_every_field() -> None:
    spec = BuildStepSpec.from_body(
        step(
            build="release",
            order=-2,
            container="docker",
            shell="/bin/bash",
            env=[{"name": "A", "value": "1"}, {"name": "_B"}],
            workingDir="src",
            timeout="10m",
            runPolicy="Always",
            retries=0,
        ),
        name="ignored",
    )

    assert spec.build == "release"
    assert (spec.order, spec.container, spec.shell, spec.working_dir) == (
        -2,
        "docker",
        "/bin/bash",
        "src",
    )
    assert spec.env == (EnvVar("A", "1"), EnvVar("_B", ""))
    assert (spec.timeout, spec.run_policy, spec.retries) == (600.0, RunPolicy.ALWAYS, 0)


@pytest.mark.parametrize(
    ("body", "field", "hint"),
    [
        (step(script=""), "spec.script", "is empty"),
        (step(script="  \n"), "spec.script", "is empty"),
        (step(script="x" * 262145), "spec.script", "ConfigMap"),
        ({"script": "x"}, "spec.pool", "name the AgentPool"),
        (step(runPolicy="Never"), "spec.runPolicy", "OnSuccess or Always"),
        (step(retries=11), "spec.retries", "at most 10"),
        (step(retries=-1), "spec.retries", "at least 0"),
        (step(timeout="0s"), "spec.timeout", "longer than zero"),
        (step(timeout="1 hour"), "spec.timeout", "not a duration"),
        (step(env=[{"name": "1X"}]), "spec.env[0].name", "not a variable name"),
        (step(env=[{"name": "A"}, {"name": "A"}]), "spec.env[1].name", "duplicate"),
        (step(env={"A": "1"}), "spec.env", "name/value pairs"),
        (step(container="Main"), "spec.container", "not a container name"),
        (step(shell=""), "spec.shell", "/bin/sh"),
    ],
)
def test_step_spec_errors_name_the_field_and_the_fix(
    body: dict[str, Any], field: str, hint: str
) -> None:
    with pytest.raises(SpecError) as caught:
        BuildStepSpec.from_body(body, name="s")

    assert caught.value.field == field
    assert hint in caught.value.message


def test_step_phases() -> None:
    final = {phase for phase in StepPhase if phase.is_final}

    assert final == {StepPhase.SUCCEEDED, StepPhase.FAILED, StepPhase.SKIPPED, StepPhase.CANCELLED}
    assert StepPhase("Queued") is StepPhase.QUEUED


def test_merge_condition_adds_with_transition_time() -> None:
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

    merged = merge_condition(
        None, Condition("Ready", ConditionStatus.TRUE, "AgentsIdle", observed_generation=3), now
    )

    assert merged == [
        {
            "type": "Ready",
            "status": "True",
            "reason": "AgentsIdle",
            "message": "",
            "lastTransitionTime": "2026-01-02T03:04:05Z",
            "observedGeneration": 3,
        }
    ]


def test_merge_condition_keeps_transition_time_while_status_holds() -> None:
    before = datetime(2026, 1, 1, tzinfo=UTC)
    later = datetime(2026, 1, 2, tzinfo=UTC)
    degraded = Condition("Degraded", ConditionStatus.FALSE, "AgentsHealthy")
    conditions = merge_condition(
        None, Condition("Ready", ConditionStatus.TRUE, "AgentsIdle"), before
    )
    conditions = merge_condition(conditions, degraded, before)

    same = merge_condition(
        conditions, Condition("Ready", ConditionStatus.TRUE, "AgentsBusy", "all busy"), later
    )
    flipped = merge_condition(
        conditions, Condition("Ready", ConditionStatus.FALSE, "NoAgents"), later
    )

    assert [c["type"] for c in same] == ["Ready", "Degraded"]
    assert same[0]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert (same[0]["reason"], same[0]["message"]) == ("AgentsBusy", "all busy")
    assert flipped[0]["lastTransitionTime"] == "2026-01-02T00:00:00Z"
    assert flipped[1] == same[1]


def test_status_shapes() -> None:
    counts = AgentCounts(starting=1, idle=2, busy=3, failed=1)
    api = ApiConnectionsStatus(running=5, queued=2, limit=32)

    assert counts.to_body() == {"starting": 1, "idle": 2, "busy": 3, "failed": 1, "total": 7}
    assert api.to_body() == {"running": 5, "queued": 2, "limit": 32, "summary": "5/32"}
