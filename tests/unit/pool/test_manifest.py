"""Agent pod manifests built from a pool's template."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from agentpool.pool.manifest import (
    AGENT_LABEL,
    POOL_LABEL,
    TEMPLATE_HASH_LABEL,
    ManifestError,
    agent_selector,
    build_agent_pod,
    is_agent_of,
    template_hash,
)

UID = "5b0e3f7c-2d4a-4c1e-9f6b-1a2b3c4d5e6f"


def make_pool(**template_overrides: Any) -> dict[str, Any]:
    template: dict[str, Any] = {
        "metadata": {
            "labels": {"team": "platform"},
            "annotations": {"sandbox.agentpool.dev/profile": "virtual-kubelet"},
        },
        "spec": {
            "containers": [
                {
                    "name": "jnlp",
                    "image": "alpine:3.20",
                    "command": ["sleep", "infinity"],
                    "resources": {"requests": {"cpu": "250m"}},
                }
            ],
            "nodeSelector": {"kubernetes.io/role": "agent"},
            "tolerations": [{"key": "virtual-kubelet.io/provider", "operator": "Exists"}],
        },
    }
    template.update(template_overrides)
    return {
        "apiVersion": "agentpool.dev/v1alpha1",
        "kind": "AgentPool",
        "metadata": {"name": "ci-linux", "namespace": "ci", "uid": UID, "generation": 3},
        "spec": {"template": template, "minIdle": 1, "maxAgents": 5},
    }


def test_pod_is_named_by_the_server_from_the_pool_name() -> None:
    pod = build_agent_pod(make_pool())
    assert (pod["apiVersion"], pod["kind"]) == ("v1", "Pod")
    assert pod["metadata"]["generateName"] == "ci-linux-"
    assert "name" not in pod["metadata"]
    assert pod["metadata"]["namespace"] == "ci"


def test_labels_mark_pool_agent_and_template_and_keep_the_templates_own() -> None:
    pool = make_pool()
    pod = build_agent_pod(pool)
    assert pod["metadata"]["labels"] == {
        "team": "platform",
        POOL_LABEL: "ci-linux",
        AGENT_LABEL: "true",
        TEMPLATE_HASH_LABEL: template_hash(pool["spec"]["template"]),
    }


def test_operator_labels_win_over_the_templates() -> None:
    pool = make_pool(metadata={"labels": {POOL_LABEL: "other", AGENT_LABEL: "no"}})
    labels = build_agent_pod(pool)["metadata"]["labels"]
    assert (labels[POOL_LABEL], labels[AGENT_LABEL]) == ("ci-linux", "true")


def test_annotations_are_preserved() -> None:
    pod = build_agent_pod(make_pool())
    assert pod["metadata"]["annotations"] == {"sandbox.agentpool.dev/profile": "virtual-kubelet"}


def test_owner_reference_points_to_the_pool_as_controller() -> None:
    pod = build_agent_pod(make_pool())
    assert pod["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "agentpool.dev/v1alpha1",
            "kind": "AgentPool",
            "name": "ci-linux",
            "uid": UID,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def test_template_spec_is_preserved_and_restart_policy_defaults_to_never() -> None:
    pool = make_pool()
    pod = build_agent_pod(pool)
    expected = {**pool["spec"]["template"]["spec"], "restartPolicy": "Never"}
    assert pod["spec"] == expected


def test_explicit_restart_policy_is_kept() -> None:
    pool = make_pool()
    pool["spec"]["template"]["spec"]["restartPolicy"] = "OnFailure"
    assert build_agent_pod(pool)["spec"]["restartPolicy"] == "OnFailure"


def test_pool_object_is_not_mutated() -> None:
    pool = make_pool()
    before = copy.deepcopy(pool)
    pod = build_agent_pod(pool)
    pod["spec"]["containers"][0]["image"] = "changed"
    pod["metadata"]["labels"]["x"] = "y"
    assert pool == before


def test_given_template_hash_is_used() -> None:
    pod = build_agent_pod(make_pool(), template_hash="feedc0ffee")
    assert pod["metadata"]["labels"][TEMPLATE_HASH_LABEL] == "feedc0ffee"


def test_template_hash_is_short_and_ignores_key_order() -> None:
    a = {"spec": {"containers": [{"name": "jnlp", "image": "alpine"}]}, "metadata": {}}
    b = {"metadata": {}, "spec": {"containers": [{"image": "alpine", "name": "jnlp"}]}}
    assert template_hash(a) == template_hash(b)
    assert len(template_hash(a)) == 10


def test_template_hash_changes_with_the_template() -> None:
    a = {"spec": {"containers": [{"name": "jnlp", "image": "alpine:3.19"}]}}
    b = {"spec": {"containers": [{"name": "jnlp", "image": "alpine:3.20"}]}}
    assert template_hash(a) != template_hash(b)


def test_template_hash_is_stable_across_releases() -> None:
    # A changed hash function would roll every idle agent of every pool on upgrade.
    assert template_hash({"spec": {"containers": [{"name": "a", "image": "b"}]}}) == ("19a178640d")


def test_template_metadata_name_and_server_fields_are_dropped() -> None:
    pool = make_pool(metadata={"name": "fixed", "uid": "x", "resourceVersion": "9"})
    meta = build_agent_pod(pool)["metadata"]
    assert not {"name", "uid", "resourceVersion"} & set(meta)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda p: p["metadata"].pop("uid"), "pool metadata lacks uid"),
        (lambda p: p["spec"].pop("template"), "spec.template is missing or not an object"),
        (lambda p: p["spec"]["template"].pop("spec"), "spec.template.spec is missing"),
        (
            lambda p: p["spec"]["template"]["spec"].update(containers=[]),
            "spec.template.spec.containers must list at least one container",
        ),
    ],
)
def test_unusable_pools_are_rejected_with_a_clear_message(mutate: Any, message: str) -> None:
    pool = make_pool()
    mutate(pool)
    with pytest.raises(ManifestError, match=message):
        build_agent_pod(pool)


def test_selector_lists_the_pools_agents() -> None:
    assert agent_selector("ci-linux") == "agentpool.dev/pool=ci-linux,agentpool.dev/agent=true"


def test_is_agent_of_checks_the_owner_uid() -> None:
    pool = make_pool()
    pod = build_agent_pod(pool)
    recreated = copy.deepcopy(pool)
    recreated["metadata"]["uid"] = "another-uid"
    assert (is_agent_of(pod, pool), is_agent_of(pod, recreated)) == (True, False)
