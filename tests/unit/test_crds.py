"""Structural sanity of crds/ and validity of examples/ against them (no API server needed)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from agentpool.model import DURATION_PATTERN, AgentPoolSpec, BuildStepSpec

ROOT = Path(__file__).resolve().parents[2]
CRD_FILES = {
    "AgentPool": ROOT / "crds" / "agentpools.yaml",
    "BuildStep": ROOT / "crds" / "buildsteps.yaml",
}


def load_crd(kind: str) -> dict[str, Any]:
    crd: dict[str, Any] = yaml.safe_load(CRD_FILES[kind].read_text())
    return crd


def schema_of(kind: str) -> dict[str, Any]:
    schema: dict[str, Any] = load_crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def example_objects() -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = []
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        objects.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return objects


def walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node with its path, as a field path (`.spec.template.spec.containers[*]`)."""
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from walk(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[*]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}.*")


def apply_defaults(node: dict[str, Any], value: Any) -> Any:
    """Apply `default:` values the way an API server does: only where the parent exists."""
    if isinstance(value, dict) and node.get("type") == "object":
        result = dict(value)
        for name, child in node.get("properties", {}).items():
            if name not in result and "default" in child:
                result[name] = copy.deepcopy(child["default"])
            if name in result:
                result[name] = apply_defaults(child, result[name])
        return result
    if isinstance(value, list) and isinstance(node.get("items"), dict):
        return [apply_defaults(node["items"], item) for item in value]
    return value


def validate(kind: str, obj: dict[str, Any]) -> None:
    # OpenAPI v3 schemas of CRDs are JSON Schema draft 4 plus x-kubernetes-* keywords, which
    # jsonschema ignores.
    jsonschema.Draft4Validator(schema_of(kind)).validate(obj)


@pytest.mark.parametrize("kind", CRD_FILES)
def test_crd_identity(kind: str) -> None:
    crd = load_crd(kind)

    spec = crd["spec"]
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["metadata"]["name"] == f"{spec['names']['plural']}.agentpool.dev"
    assert spec["group"] == "agentpool.dev"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == kind
    assert spec["names"]["categories"] == ["ci"]
    [version] = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}


def test_short_names() -> None:
    assert load_crd("AgentPool")["spec"]["names"]["shortNames"] == ["ap"]
    assert load_crd("BuildStep")["spec"]["names"]["shortNames"] == ["bs"]


@pytest.mark.parametrize("kind", CRD_FILES)
def test_every_field_has_a_description(kind: str) -> None:
    # Root metadata is the exception: API servers forbid anything on it but `type: object`.
    missing = [
        path or "<root>"
        for path, node in walk(schema_of(kind))
        if path != ".metadata" and not node.get("description", "").strip()
    ]

    assert missing == []


@pytest.mark.parametrize("kind", CRD_FILES)
def test_schema_is_structural(kind: str) -> None:
    schema = schema_of(kind)

    untyped = [path for path, node in walk(schema) if "type" not in node]
    assert untyped == []
    assert schema["properties"]["metadata"] == {"type": "object"}
    for path, node in walk(schema):
        if node.get("x-kubernetes-list-type") == "map":
            keys = node["x-kubernetes-list-map-keys"]
            assert set(keys) <= set(node["items"].get("required", [])), path


@pytest.mark.parametrize("kind", CRD_FILES)
def test_defaults_are_valid_against_their_own_schema(kind: str) -> None:
    nodes = [(path, node) for path, node in walk(schema_of(kind)) if "default" in node]

    invalid = [
        path
        for path, node in nodes
        if not jsonschema.Draft4Validator(node).is_valid(apply_defaults(node, node["default"]))
    ]

    assert nodes
    assert invalid == []


@pytest.mark.parametrize("kind", CRD_FILES)
def test_durations_use_the_model_pattern(kind: str) -> None:
    durations = [
        node for _, node in walk(schema_of(kind)) if node.get("pattern") == DURATION_PATTERN.pattern
    ]

    assert durations
    for node in durations:
        assert node["type"] == "string"
        assert DURATION_PATTERN.match(node.get("default", "1s"))


@pytest.mark.parametrize("kind", CRD_FILES)
def test_printer_columns_point_at_schema_fields(kind: str) -> None:
    schema = schema_of(kind)
    paths = {path for path, _ in walk(schema)}

    for column in load_crd(kind)["spec"]["versions"][0]["additionalPrinterColumns"]:
        json_path = column["jsonPath"].split("[?")[0]
        assert json_path.startswith(".metadata.") or json_path in paths, column


def test_printer_column_names() -> None:
    def names(kind: str) -> list[str]:
        columns = load_crd(kind)["spec"]["versions"][0]["additionalPrinterColumns"]
        return [c["name"] for c in columns if not c.get("priority")]

    assert names("AgentPool") == ["Ready", "Idle", "Busy", "Starting", "Queued", "API", "Age"]
    assert names("BuildStep") == ["Pool", "Build", "Phase", "Exit", "Agent", "Age"]


def test_agentpool_cel_rules() -> None:
    spec_rules = schema_of("AgentPool")["properties"]["spec"]["x-kubernetes-validations"]

    assert [r["rule"] for r in spec_rules] == ["self.minIdle <= self.maxAgents"]
    assert "lower minIdle or raise maxAgents" in spec_rules[0]["message"]


def test_buildstep_spec_is_immutable() -> None:
    rules = schema_of("BuildStep")["properties"]["spec"]["x-kubernetes-validations"]

    assert rules == [
        {
            "rule": "self == oldSelf",
            "message": "BuildStep spec is immutable; create a new BuildStep instead",
        }
    ]


def test_examples_cover_both_kinds_and_a_failing_build() -> None:
    objects = example_objects()
    steps = [o for o in objects if o["kind"] == "BuildStep"]
    pools = [o for o in objects if o["kind"] == "AgentPool"]

    assert len(pools) >= 1
    assert len({s["spec"]["build"] for s in steps}) >= 2
    annotations = pools[0]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["sandbox.agentpool.dev/profile"] == "virtual-kubelet"
    assert any("exit 1" in s["spec"]["script"] for s in steps)
    assert any(s["spec"].get("runPolicy") == "Always" for s in steps)


@pytest.mark.parametrize(
    "obj", example_objects(), ids=lambda o: f"{o['kind']}/{o['metadata']['name']}"
)
def test_example_validates_after_defaulting(obj: dict[str, Any]) -> None:
    defaulted = apply_defaults(schema_of(obj["kind"]), obj)

    validate(obj["kind"], defaulted)
    assert defaulted["apiVersion"] == "agentpool.dev/v1alpha1"


@pytest.mark.parametrize(
    "obj", example_objects(), ids=lambda o: f"{o['kind']}/{o['metadata']['name']}"
)
def test_model_defaults_match_crd_defaults(obj: dict[str, Any]) -> None:
    defaulted = apply_defaults(schema_of(obj["kind"]), obj)
    name = obj["metadata"]["name"]

    if obj["kind"] == "AgentPool":
        assert AgentPoolSpec.from_body(obj["spec"]) == AgentPoolSpec.from_body(defaulted["spec"])
    else:
        parse = BuildStepSpec.from_body
        assert parse(obj["spec"], name=name) == parse(defaulted["spec"], name=name)


def test_minimal_pool_gets_the_model_defaults() -> None:
    minimal = {"template": {"spec": {"containers": [{"name": "agent", "image": "busybox"}]}}}
    obj = {"apiVersion": "agentpool.dev/v1alpha1", "kind": "AgentPool", "spec": minimal}

    defaulted = apply_defaults(schema_of("AgentPool"), obj)["spec"]

    assert defaulted["readiness"] == {"tolerateVirtualKubeletPending": True}
    assert defaulted["sessions"]["batchWindow"] == "50ms"
    assert AgentPoolSpec.from_body(defaulted) == AgentPoolSpec.from_body(minimal)


@pytest.mark.parametrize(
    ("kind", "spec", "field"),
    [
        ("AgentPool", {"template": {"spec": {"containers": []}}}, "containers"),
        ("AgentPool", {"template": {"spec": {"containers": [{"image": "x"}]}}}, "name"),
        ("AgentPool", {"template": {"spec": {}}, "minIdle": -1}, "minIdle"),
        ("AgentPool", {"template": {"spec": {}}, "idleTimeout": "10 minutes"}, "idleTimeout"),
        ("BuildStep", {"pool": "p", "script": ""}, "script"),
        ("BuildStep", {"pool": "p", "script": "x", "runPolicy": "Never"}, "runPolicy"),
        ("BuildStep", {"pool": "p", "script": "x", "retries": 11}, "retries"),
        ("BuildStep", {"pool": "p", "script": "x", "env": [{"name": "1X"}]}, "name"),
        ("BuildStep", {"script": "x"}, "pool"),
    ],
)
def test_invalid_objects_are_rejected_naming_the_field(
    kind: str, spec: dict[str, Any], field: str
) -> None:
    obj = {"apiVersion": "agentpool.dev/v1alpha1", "kind": kind, "spec": spec}

    errors = list(jsonschema.Draft4Validator(schema_of(kind)).iter_errors(obj))

    assert errors
    assert any(
        field in list(e.path) or field in e.message or field in str(e.schema_path) for e in errors
    )


def test_agentpool_defaults_are_the_issue_table() -> None:
    template = {"spec": {"containers": [{"name": "agent", "image": "busybox"}]}}
    obj = {
        "apiVersion": "agentpool.dev/v1alpha1",
        "kind": "AgentPool",
        "spec": {"template": template},
    }

    defaulted = apply_defaults(schema_of("AgentPool"), obj)["spec"]

    assert defaulted == {
        "template": template,
        "minIdle": 0,
        "maxAgents": 10,
        "idleTimeout": "10m",
        "startupTimeout": "5m",
        "ephemeral": False,
        "readiness": {"tolerateVirtualKubeletPending": True},
        "apiConnections": {"max": 32, "queueTimeout": "30s"},
        "sessions": {
            "batchWindow": "50ms",
            "maxSteps": 100,
            "linger": "2s",
            "detachAfter": "2s",
            "pollInterval": "2s",
        },
        "workspace": {"isolation": "PerBuild"},
    }


def test_buildstep_defaults_are_the_issue_table() -> None:
    spec = {"pool": "p", "script": "make"}
    obj = {"apiVersion": "agentpool.dev/v1alpha1", "kind": "BuildStep", "spec": spec}

    defaulted = apply_defaults(schema_of("BuildStep"), obj)["spec"]

    assert defaulted == {
        "pool": "p",
        "script": "make",
        "order": 0,
        "shell": "/bin/sh",
        "timeout": "1h",
        "runPolicy": "OnSuccess",
        "retries": 1,
    }


def test_buildstep_spec_fields_and_required() -> None:
    spec = schema_of("BuildStep")["properties"]["spec"]
    env_item = spec["properties"]["env"]["items"]

    assert set(spec["properties"]) == {
        *("pool", "build", "order", "container", "script", "shell", "env"),
        *("workingDir", "timeout", "runPolicy", "retries", "ttlSecondsAfterFinished"),
    }
    assert sorted(spec["required"]) == ["pool", "script"]
    assert set(env_item["properties"]) == {"name", "value"}


def test_agentpool_status_fields() -> None:
    status = schema_of("AgentPool")["properties"]["status"]["properties"]

    assert set(status["agents"]["properties"]) == {"starting", "idle", "busy", "failed", "total"}
    assert set(status["steps"]["properties"]) == {"queued", "running"}
    assert {"running", "queued", "limit"} <= set(status["apiConnections"]["properties"])
    assert {"conditions", "observedGeneration"} <= set(status)


def test_buildstep_status_fields_and_phases() -> None:
    status = schema_of("BuildStep")["properties"]["status"]["properties"]

    assert set(status) == {
        *("phase", "build", "reason", "message", "agent", "session", "exitCode", "attempts"),
        *("startedAt", "finishedAt", "logTail", "logBytes", "conditions", "observedGeneration"),
    }
    assert status["phase"]["enum"] == [
        *("Pending", "Queued", "Running", "Succeeded", "Failed", "Skipped", "Cancelled"),
    ]


@pytest.mark.parametrize("kind", CRD_FILES)
def test_conditions_have_the_standard_kubernetes_shape(kind: str) -> None:
    conditions = schema_of(kind)["properties"]["status"]["properties"]["conditions"]
    item = conditions["items"]

    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert sorted(item["required"]) == ["lastTransitionTime", "message", "reason", "status", "type"]
    assert item["properties"]["status"]["enum"] == ["True", "False", "Unknown"]
    assert item["properties"]["lastTransitionTime"]["format"] == "date-time"
    assert "observedGeneration" in item["properties"]
