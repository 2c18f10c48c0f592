"""The Argo CD health scripts in docs/argocd/, run by a real Lua 5.1 (Argo CD embeds gopher-lua,
a Lua 5.1 implementation) against status fixtures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from lupa import lua51

ARGOCD = Path(__file__).resolve().parents[2] / "docs" / "argocd"
AGENTPOOL_SCRIPT = ARGOCD / "agentpool-health.lua"
BUILDSTEP_SCRIPT = ARGOCD / "buildstep-health.lua"


def health(script: Path, obj: dict[str, Any]) -> tuple[str, str]:
    """Evaluate a health script the way Argo CD does: `obj` global, returns {status, message}."""
    lua = lua51.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(script.read_text())
    return str(result["status"]), str(result["message"])


def condition(kind: str, status: str, reason: str, message: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": "2026-01-01T00:00:00Z",
        **extra,
    }


def pool(status: dict[str, Any] | None, generation: int = 2) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "agentpool.dev/v1alpha1",
        "kind": "AgentPool",
        "metadata": {"name": "demo", "namespace": "ci", "generation": generation},
        "spec": {"minIdle": 1},
    }
    if status is not None:
        body["status"] = status
    return body


READY = condition("Ready", "True", "AgentsIdle", "1 agent idle")
NOT_READY = condition("Ready", "False", "AgentsStarting", "waiting for 1 agent to start")
DEGRADED = condition("Degraded", "True", "AgentsFailing", "ImagePullBackOff on agent demo-x1")
NOT_DEGRADED = condition("Degraded", "False", "AsExpected", "no failures")


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        pytest.param(
            pool(None),
            ("Progressing", "Waiting for the operator to report the pool's status"),
            id="no-status",
        ),
        pytest.param(
            pool({"observedGeneration": 1, "conditions": [READY]}),
            ("Progressing", "Waiting for the operator to observe generation 2"),
            id="stale-generation-even-if-ready",
        ),
        pytest.param(
            pool({"conditions": [READY]}),
            ("Progressing", "Waiting for the operator to observe generation 2"),
            id="no-observed-generation",
        ),
        pytest.param(
            pool({"observedGeneration": 2, "conditions": [READY, NOT_DEGRADED]}),
            ("Healthy", "1 agent idle"),
            id="ready",
        ),
        pytest.param(
            pool({"observedGeneration": 2, "conditions": [READY, DEGRADED]}),
            ("Degraded", "ImagePullBackOff on agent demo-x1"),
            id="degraded-wins-over-ready",
        ),
        pytest.param(
            pool({"observedGeneration": 2, "conditions": [NOT_READY, NOT_DEGRADED]}),
            ("Progressing", "waiting for 1 agent to start"),
            id="not-ready-yet",
        ),
        pytest.param(
            pool({"observedGeneration": 2}),
            ("Progressing", "Waiting for the pool to become ready"),
            id="no-conditions",
        ),
        pytest.param(
            pool(
                {
                    "observedGeneration": 2,
                    "conditions": [condition("Ready", "True", "AgentsIdle", "")],
                }
            ),
            ("Healthy", "AgentsIdle"),
            id="reason-when-message-empty",
        ),
        pytest.param(
            pool(
                {
                    "observedGeneration": 2,
                    "conditions": [
                        condition("Ready", "True", "AgentsIdle", "old", observedGeneration=1)
                    ],
                }
            ),
            ("Progressing", "old"),
            id="condition-from-older-generation",
        ),
    ],
)
def test_agentpool_health(obj: dict[str, Any], expected: tuple[str, str]) -> None:
    assert health(AGENTPOOL_SCRIPT, obj) == expected


def step(status: dict[str, Any] | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "agentpool.dev/v1alpha1",
        "kind": "BuildStep",
        "metadata": {"name": "release-test", "namespace": "ci", "generation": 1},
        "spec": {"pool": "demo", "script": "exit 1"},
    }
    if status is not None:
        body["status"] = status
    return body


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        pytest.param(
            step(None),
            ("Progressing", "Waiting for the operator to schedule the step"),
            id="no-status",
        ),
        pytest.param(
            step({"phase": "Pending"}), ("Progressing", "Pending: in progress"), id="pending"
        ),
        pytest.param(
            step({"phase": "Queued", "reason": "WaitingForAgent", "message": "0 of 3 idle"}),
            ("Progressing", "Queued: WaitingForAgent: 0 of 3 idle"),
            id="queued",
        ),
        pytest.param(
            step({"phase": "Running", "agent": "demo-x1"}),
            ("Progressing", "Running: in progress"),
            id="running",
        ),
        pytest.param(
            step({"phase": "Succeeded", "exitCode": 0}), ("Healthy", "Succeeded"), id="succeeded"
        ),
        pytest.param(
            step({"phase": "Skipped", "reason": "EarlierStepFailed", "message": "release-test"}),
            ("Healthy", "Skipped: EarlierStepFailed: release-test"),
            id="skipped",
        ),
        pytest.param(
            step(
                {
                    "phase": "Failed",
                    "reason": "NonZeroExit",
                    "message": "script exited with 1",
                    "exitCode": 1,
                }
            ),
            ("Degraded", "NonZeroExit: script exited with 1"),
            id="failed-message-states-the-exit-code",
        ),
        pytest.param(
            step(
                {
                    "phase": "Failed",
                    "reason": "ScriptFailed",
                    "message": "the script exited with code 2",
                    "exitCode": 2,
                }
            ),
            ("Degraded", "ScriptFailed: the script exited with code 2"),
            id="operator-script-failure-says-the-code-once",
        ),
        pytest.param(
            step(
                {
                    "phase": "Failed",
                    "reason": "Timeout",
                    "message": "the step ran longer than its timeout of 12 s and was killed",
                    "exitCode": 1,
                }
            ),
            (
                "Degraded",
                "Timeout: the step ran longer than its timeout of 12 s and was killed "
                "(exit code 1)",
            ),
            id="failed-with-exit-code-not-in-the-message",
        ),
        pytest.param(
            step({"phase": "Failed", "message": "exited with code 12", "exitCode": 1}),
            ("Degraded", "exited with code 12 (exit code 1)"),
            id="another-number-is-not-the-exit-code",
        ),
        pytest.param(
            step(
                {
                    "phase": "Queued",
                    "reason": "Queued",
                    "message": "waiting for an agent of pool demo (build b)",
                }
            ),
            ("Progressing", "Queued: waiting for an agent of pool demo (build b)"),
            id="reason-repeating-the-phase-is-said-once",
        ),
        pytest.param(
            step(
                {
                    "phase": "Cancelled",
                    "reason": "Cancelled",
                    "message": "cancelled with the annotation agentpool.dev/cancel=true",
                }
            ),
            ("Degraded", "Cancelled: cancelled with the annotation agentpool.dev/cancel=true"),
            id="cancelled-by-annotation-said-once",
        ),
        pytest.param(
            step(
                {
                    "phase": "Failed",
                    "reason": "ApiQuotaTimeout",
                    "message": "32 running, 5 waiting; raise spec.apiConnections.max",
                }
            ),
            ("Degraded", "ApiQuotaTimeout: 32 running, 5 waiting; raise spec.apiConnections.max"),
            id="failed-without-exit-code",
        ),
        pytest.param(
            step({"phase": "Cancelled", "reason": "PoolDeleted"}),
            ("Degraded", "Cancelled: PoolDeleted"),
            id="cancelled",
        ),
        pytest.param(
            step({"phase": "Exploded"}), ("Unknown", "Unknown phase Exploded"), id="unknown-phase"
        ),
    ],
)
def test_buildstep_health(obj: dict[str, Any], expected: tuple[str, str]) -> None:
    assert health(BUILDSTEP_SCRIPT, obj) == expected


@pytest.mark.parametrize(
    ("key", "script"),
    [
        ("resource.customizations.health.agentpool.dev_AgentPool", AGENTPOOL_SCRIPT),
        ("resource.customizations.health.agentpool.dev_BuildStep", BUILDSTEP_SCRIPT),
    ],
)
def test_argocd_cm_embeds_the_tested_scripts(key: str, script: Path) -> None:
    config_map = yaml.safe_load((ARGOCD / "argocd-cm.yaml").read_text())

    assert config_map["data"][key] == script.read_text()
