"""The Helm chart rendered by the real Helm v4 engine: lint, objects, RBAC, security, schema."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from chart_rendering import CHART_DIR, NAMESPACE, RELEASE, ROOT

Render = Callable[..., list[dict[str, Any]]]

FULLNAME = f"{RELEASE}-agentpool-operator"
SELECTOR = {"app.kubernetes.io/name": "agentpool-operator", "app.kubernetes.io/instance": RELEASE}
CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding", "ClusterKopfPeering"}
NOT_BUILT_IN = {"ServiceMonitor", "KopfPeering", "ClusterKopfPeering"}

WORKLOAD_RULES: list[dict[str, Any]] = [
    {
        "apiGroups": ["agentpool.dev"],
        "resources": ["agentpools"],
        "verbs": ["list", "watch"],
    },
    {
        "apiGroups": ["agentpool.dev"],
        "resources": ["buildsteps"],
        "verbs": ["list", "watch", "delete"],
    },
    {
        "apiGroups": ["agentpool.dev"],
        "resources": ["agentpools/status", "buildsteps/status"],
        "verbs": ["patch"],
    },
    {
        "apiGroups": [""],
        "resources": ["pods"],
        "verbs": ["get", "list", "watch", "create", "delete"],
    },
    {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create", "get"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
]
CRD_RULE = {
    "apiGroups": ["apiextensions.k8s.io"],
    "resources": ["customresourcedefinitions"],
    "verbs": ["list", "watch"],
}
NAMESPACE_RULE = {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]}

NAMESPACED = {"watchNamespaces": ["team-a", "team-b"]}
SERVICE_MONITOR = {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}}}
HA = {"replicaCount": 2, "podDisruptionBudget": {"enabled": True}}
VALUE_SETS: dict[str, dict[str, Any]] = {
    "default": {},
    "namespaced": NAMESPACED,
    "service-monitor": SERVICE_MONITOR,
    "two-replicas-pdb": HA,
    "namespaced-two-replicas": {**NAMESPACED, **HA},
    "grafana-dashboard": {"grafanaDashboard": {"enabled": True}},
}


def peering_rules(resource: str, name: str) -> list[dict[str, Any]]:
    groups = ["kopf.dev", "zalando.org"]
    return [
        {"apiGroups": groups, "resources": [resource], "verbs": ["list", "watch"]},
        {
            "apiGroups": groups,
            "resources": [resource],
            "resourceNames": [name],
            "verbs": ["patch"],
        },
    ]


def only(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def kinds(objects: list[dict[str, Any]]) -> list[str]:
    return sorted(o["kind"] for o in objects)


def operator_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    containers = only(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["operator"]
    container: dict[str, Any] = containers[0]
    return container


def test_chart_lints_clean_in_strict_mode() -> None:
    for values in VALUE_SETS.values():
        report = helm.lint(CHART_DIR, values, strict=True, namespace=NAMESPACE)

        problems = [m for m in report["messages"] if m["severity"] >= 2]
        assert (report["errors"], problems) == ([], [])


def test_default_values_render_the_cluster_wide_standalone_set() -> None:
    with helm.Chart.load(CHART_DIR) as chart:
        objects = [
            doc
            for path, text in chart.render(name=RELEASE, namespace=NAMESPACE).items()
            if not path.endswith("NOTES.txt")
            for doc in yaml.safe_load_all(text)
            if doc
        ]

    assert kinds(objects) == [
        *("ClusterRole",) * 4,  # the operator's, and the user roles: view, edit, admin
        "ClusterRoleBinding",
        "Deployment",
        "Service",
        "ServiceAccount",
    ]


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_every_object_carries_the_standard_labels(render: Render, values: dict[str, Any]) -> None:
    for obj in render(values):
        labels = obj["metadata"]["labels"]
        assert labels["helm.sh/chart"] == "agentpool-operator-0.1.0"
        assert labels["app.kubernetes.io/name"] == "agentpool-operator"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/version"] == "0.1.0"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/component"] == "operator"


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_built_in_objects_are_valid_kubernetes_1_37(render: Render, values: dict[str, Any]) -> None:
    for obj in render(values):
        if obj["kind"] not in NOT_BUILT_IN:
            kubernetes_validate.validate(obj, "1.37.0", strict=True)


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_rbac_has_no_wildcards_secrets_or_escalation(
    render: Render, values: dict[str, Any]
) -> None:
    for role in render(values):
        if role["kind"] not in {"Role", "ClusterRole"}:
            continue
        for rule in role["rules"]:
            fields = rule["apiGroups"] + rule["resources"] + rule["verbs"]
            assert "*" not in fields
            assert "secrets" not in rule["resources"]
            assert not {"escalate", "bind", "impersonate", "deletecollection"} & set(rule["verbs"])


def test_cluster_wide_mode_grants_exactly_what_the_operator_uses(render: Render) -> None:
    objects = render()

    role = only(objects, "ClusterRole", FULLNAME)
    binding = only(objects, "ClusterRoleBinding")
    assert role["rules"] == [*WORKLOAD_RULES, CRD_RULE]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": FULLNAME,
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}
    ]
    assert only(objects, "ServiceAccount")["metadata"]["name"] == FULLNAME


def test_namespaced_mode_grants_workload_rules_only_in_the_watched_namespaces(
    render: Render,
) -> None:
    objects = render(NAMESPACED)

    cluster_role = only(objects, "ClusterRole", f"{FULLNAME}-cluster")
    assert cluster_role["rules"] == [CRD_RULE, NAMESPACE_RULE]
    roles = {r["metadata"]["namespace"]: r for r in objects if r["kind"] == "Role"}
    bindings = {b["metadata"]["namespace"]: b for b in objects if b["kind"] == "RoleBinding"}
    assert sorted(roles) == sorted(bindings) == ["team-a", "team-b"]
    for namespace in ("team-a", "team-b"):
        assert roles[namespace]["rules"] == WORKLOAD_RULES
        assert bindings[namespace]["roleRef"]["name"] == FULLNAME
        assert bindings[namespace]["subjects"] == [
            {"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}
        ]
    assert operator_container(objects)["args"][:2] == ["--namespace=team-a", "--namespace=team-b"]


def test_namespaced_mode_can_skip_namespace_observation(render: Render) -> None:
    objects = render({**NAMESPACED, "rbac": {"observeNamespaces": False}})

    assert only(objects, "ClusterRole", f"{FULLNAME}-cluster")["rules"] == [CRD_RULE]


def test_rbac_can_be_left_to_the_platform_team(render: Render) -> None:
    objects = render({"rbac": {"create": False}})

    assert not {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"} & set(kinds(objects))


def test_namespaced_objects_live_in_the_release_namespace(render: Render) -> None:
    for obj in render({**SERVICE_MONITOR, **HA}):
        if obj["kind"] not in CLUSTER_SCOPED:
            assert obj["metadata"]["namespace"] == NAMESPACE, obj["kind"]


def test_deployment_runs_under_the_restricted_pod_security_standard(render: Render) -> None:
    objects = render()

    pod = only(objects, "Deployment")["spec"]["template"]["spec"]
    container = operator_container(objects)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}]
    assert set(container["resources"]) == {"requests", "limits"}


def test_one_replica_runs_standalone_and_is_never_doubled_during_rollout(render: Render) -> None:
    objects = render()

    deployment = only(objects, "Deployment")
    assert operator_container(objects)["args"] == [
        "--all-namespaces",
        "--standalone",
        "--metrics-port=9090",
        "--liveness-port=8080",
        "--log-format=json",
    ]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert deployment["spec"]["selector"]["matchLabels"] == SELECTOR


def test_probes_hit_kopf_health_endpoint(render: Render) -> None:
    container = operator_container(render({"health": {"port": 8181}}))

    assert {"name": "health", "containerPort": 8181, "protocol": "TCP"} in container["ports"]
    assert "--liveness-port=8181" in container["args"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}


def test_two_replicas_use_cluster_peering_and_a_pdb(render: Render) -> None:
    objects = render(HA)

    args = operator_container(objects)["args"]
    assert f"--peering={FULLNAME}" in args
    assert "--standalone" not in args
    assert only(objects, "Deployment")["spec"]["strategy"]["type"] == "RollingUpdate"
    pdb = only(objects, "PodDisruptionBudget")
    assert pdb["spec"] == {"minAvailable": 1, "selector": {"matchLabels": SELECTOR}}
    peering = only(objects, "ClusterKopfPeering")
    assert (peering["apiVersion"], peering["metadata"]["name"]) == ("kopf.dev/v1", FULLNAME)
    assert only(objects, "ClusterRole", FULLNAME)["rules"] == [
        *WORKLOAD_RULES,
        CRD_RULE,
        *peering_rules("clusterkopfpeerings", FULLNAME),
    ]


def test_two_replicas_in_namespaced_mode_peer_in_every_watched_namespace(render: Render) -> None:
    objects = render({**NAMESPACED, **HA, "peering": {"name": "ci-operator"}})

    peerings = [o for o in objects if o["kind"] == "KopfPeering"]
    assert sorted(p["metadata"]["namespace"] for p in peerings) == ["team-a", "team-b"]
    assert {p["metadata"]["name"] for p in peerings} == {"ci-operator"}
    for role in (o for o in objects if o["kind"] == "Role"):
        assert role["rules"] == [*WORKLOAD_RULES, *peering_rules("kopfpeerings", "ci-operator")]
    assert "--peering=ci-operator" in operator_container(objects)["args"]


def test_pdb_is_not_rendered_for_a_single_replica(render: Render) -> None:
    objects = render({"podDisruptionBudget": {"enabled": True}})

    assert "PodDisruptionBudget" not in kinds(objects)


def test_pdb_that_would_block_every_eviction_is_refused(chart: helm.Chart) -> None:
    values = {"replicaCount": 2, "podDisruptionBudget": {"enabled": True, "minAvailable": 2}}

    with pytest.raises(helm.HelmRenderError, match=r"must be below replicaCount \(2\)"):
        chart.render(values=values, name=RELEASE, namespace=NAMESPACE)


def test_pdb_accepts_a_percentage(render: Render) -> None:
    values = {"replicaCount": 3, "podDisruptionBudget": {"enabled": True, "minAvailable": "50%"}}

    assert only(render(values), "PodDisruptionBudget")["spec"]["minAvailable"] == "50%"


def test_service_monitor_scrapes_the_metrics_service(render: Render) -> None:
    objects = render(SERVICE_MONITOR)

    service = only(objects, "Service")
    monitor = only(objects, "ServiceMonitor")
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}
    ]
    assert service["spec"]["selector"] == SELECTOR
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["selector"]["matchLabels"] == SELECTOR
    assert monitor["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "30s", "scrapeTimeout": "10s"}
    ]


def test_service_monitor_without_the_service_fails_clearly(chart: helm.Chart) -> None:
    values = {"metrics": {"service": {"enabled": False}, "serviceMonitor": {"enabled": True}}}

    with pytest.raises(helm.HelmRenderError, match=r"needs metrics\.service\.enabled"):
        chart.render(values=values, name=RELEASE, namespace=NAMESPACE)


def test_pod_customisation_values_reach_the_pod(render: Render) -> None:
    objects = render(
        {
            "image": {
                "repository": "registry.example.com/ap",
                "tag": "1.2.3",
                "pullPolicy": "Always",
            },
            "imagePullSecrets": ["regcred"],
            "extraArgs": ["--some-flag"],
            "extraEnv": [{"name": "AGENTPOOL_LOG_TAIL_BYTES", "value": "4096"}],
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [{"key": "ci", "operator": "Exists", "effect": "NoSchedule"}],
            "priorityClassName": "system-cluster-critical",
            "podAnnotations": {"team": "ci"},
            "metrics": {"scrapeAnnotations": True},
            "verbose": True,
            "logFormat": "plain",
        }
    )

    template = only(objects, "Deployment")["spec"]["template"]
    pod = template["spec"]
    container = operator_container(objects)
    assert container["image"] == "registry.example.com/ap:1.2.3"
    assert container["imagePullPolicy"] == "Always"
    assert container["args"][-3:] == ["--log-format=plain", "--verbose", "--some-flag"]
    assert {"name": "AGENTPOOL_LOG_TAIL_BYTES", "value": "4096"} in container["env"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["tolerations"] == [{"key": "ci", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert template["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "9090",
        "prometheus.io/path": "/metrics",
        "team": "ci",
    }


def test_image_tag_defaults_to_the_app_version(render: Render) -> None:
    assert operator_container(render())["image"] == "agentpool-operator:0.1.0"


def test_image_digest_pins_the_image(render: Render) -> None:
    digest = "sha256:" + "ab" * 32

    container = operator_container(render({"image": {"repository": "r/ap", "digest": digest}}))

    assert container["image"] == f"r/ap:0.1.0@{digest}"


def test_existing_service_account_needs_a_name(chart: helm.Chart) -> None:
    with pytest.raises(helm.HelmRenderError, match=r"serviceAccount\.name is required"):
        chart.render(values={"serviceAccount": {"create": False}}, name=RELEASE)


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"replicas": 2}, "additional properties 'replicas' not allowed"),
        ({"image": {"tags": "1.0"}}, "additional properties 'tags' not allowed"),
        ({"metrics": {"serviceMonitor": {"enable": True}}}, "'enable' not allowed"),
        ({"logFormat": "xml"}, "logFormat"),
        ({"watchNamespaces": ["Team_A"]}, "watchNamespaces"),
        ({"replicaCount": "2"}, "replicaCount"),
        ({"image": {"repository": "r/ap", "digest": "latest"}}, "digest"),
        ({"podDisruptionBudget": {"minAvailable": "half"}}, "minAvailable"),
    ],
)
def test_schema_rejects_typos_and_bad_values(
    chart: helm.Chart, values: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(helm.HelmValuesError, match=re.escape(complaint)):
        chart.render(values=values, name=RELEASE, namespace=NAMESPACE)


def test_default_values_satisfy_the_schema(chart: helm.Chart) -> None:
    chart.validate_schema(chart.values)


def test_chart_crds_are_the_top_level_crds(chart: helm.Chart) -> None:
    shipped = {Path(c["filename"]).name: c["data"] for c in chart.crds}
    source = {p.name: p.read_text() for p in sorted((ROOT / "crds").glob("*.yaml"))}

    assert source
    assert shipped == source


def test_every_values_key_is_commented() -> None:
    uncommented: list[str] = []
    previous = ""
    passthrough_indent: int | None = None
    for line in (CHART_DIR / "values.yaml").read_text().splitlines():
        match = re.match(r"^(\s*)([A-Za-z][\w.-]*):", line)
        if match:
            indent = len(match.group(1))
            if passthrough_indent is not None and indent > passthrough_indent:
                continue
            passthrough_indent = None
            if not previous.lstrip().startswith("#"):
                uncommented.append(match.group(2))
            # Kubernetes objects passed through verbatim are documented by the key above them.
            if match.group(2) == "resources":
                passthrough_indent = indent
        if line.strip():
            previous = line

    assert uncommented == []


def test_user_roles_aggregate_into_view_edit_and_admin(render: Render) -> None:
    roles = {
        o["metadata"]["name"].removeprefix(f"{FULLNAME}-"): o
        for o in render()
        if o["kind"] == "ClusterRole" and o["metadata"]["name"] != FULLNAME
    }

    def aggregates(role: str) -> set[str]:
        labels = roles[role]["metadata"]["labels"]
        prefix = "rbac.authorization.k8s.io/aggregate-to-"
        return {k.removeprefix(prefix) for k, v in labels.items() if k.startswith(prefix) and v}

    assert aggregates("view") == {"view", "edit", "admin"}
    assert aggregates("edit") == {"edit", "admin"}
    assert aggregates("admin") == {"admin"}
    assert roles["view"]["rules"][0]["verbs"] == ["get", "list", "watch"]
    # Editors submit, cancel and delete steps; only admins touch pools (their pod templates).
    assert roles["edit"]["rules"] == [
        {
            "apiGroups": ["agentpool.dev"],
            "resources": ["buildsteps"],
            "verbs": ["create", "update", "patch", "delete"],
        }
    ]
    assert roles["admin"]["rules"][0]["resources"] == ["agentpools"]
    assert not [o for o in render({"rbac": {"userRoles": False}}) if o["kind"] == "ClusterRole"][1:]
