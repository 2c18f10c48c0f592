"""CRD schemas (prune, default, validate) and built-in validation, in Kubernetes wording."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentpool_sandbox.schema import CustomResourceSchema, unknown_builtin_fields, validate_builtin

ROOT = Path(__file__).resolve().parents[3]

WIDGET_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.dev"},
    "spec": {
        "group": "example.dev",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["size"],
                                "x-kubernetes-validations": [
                                    {"rule": "self == oldSelf", "message": "spec is immutable"}
                                ],
                                "properties": {
                                    "size": {"type": "integer", "minimum": 0, "maximum": 10},
                                    "mode": {
                                        "type": "string",
                                        "enum": ["OnSuccess", "Always"],
                                        "default": "OnSuccess",
                                    },
                                    "port": {"x-kubernetes-int-or-string": True},
                                    "note": {"type": "string", "nullable": True},
                                    "limits": {
                                        "type": "object",
                                        "default": {},
                                        "properties": {
                                            "cpu": {"type": "string", "default": "1"},
                                        },
                                    },
                                    "probe": {
                                        "type": "object",
                                        "properties": {
                                            "period": {"type": "integer", "default": 10},
                                        },
                                    },
                                    "env": {
                                        "type": "array",
                                        "x-kubernetes-list-type": "map",
                                        "x-kubernetes-list-map-keys": ["name"],
                                        "items": {
                                            "type": "object",
                                            "required": ["name"],
                                            "properties": {
                                                "name": {"type": "string", "pattern": "^[A-Z_]+$"},
                                                "value": {"type": "string", "default": ""},
                                            },
                                        },
                                    },
                                    "tags": {
                                        "type": "array",
                                        "x-kubernetes-list-type": "set",
                                        "items": {"type": "string"},
                                    },
                                    "extra": {
                                        "type": "object",
                                        "x-kubernetes-preserve-unknown-fields": True,
                                    },
                                    "labels": {
                                        "type": "object",
                                        "additionalProperties": {"type": "string"},
                                    },
                                    "resource": {
                                        "type": "object",
                                        "x-kubernetes-embedded-resource": True,
                                        "x-kubernetes-preserve-unknown-fields": True,
                                    },
                                },
                            },
                            "status": {
                                "type": "object",
                                "properties": {
                                    "phase": {"type": "string", "default": "Pending"},
                                    "when": {"type": "string", "format": "date-time"},
                                },
                            },
                        },
                    }
                },
            }
        ],
    },
}


def widget(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "example.dev/v1",
        "kind": "Widget",
        "metadata": {"name": "w", "namespace": "default"},
        "spec": {"size": 1, **spec},
    }


@pytest.fixture
def schema() -> CustomResourceSchema:
    return CustomResourceSchema.from_crd(WIDGET_CRD, "v1")


def by_field(causes: list[Any]) -> dict[str, tuple[str, str]]:
    return {c["field"]: (c["reason"], c["message"]) for c in causes}


def test_from_crd_reads_identity(schema: CustomResourceSchema) -> None:
    assert (schema.group, schema.version, schema.kind, schema.plural) == (
        "example.dev",
        "v1",
        "Widget",
        "widgets",
    )
    assert schema.namespaced and schema.has_status


def test_from_crd_rejects_unknown_version() -> None:
    with pytest.raises(KeyError):
        CustomResourceSchema.from_crd(WIDGET_CRD, "v2")


def test_prune_drops_unknown_fields_but_keeps_envelope(schema: CustomResourceSchema) -> None:
    obj = widget(bogus=1, extra={"anything": {"goes": 1}}, labels={"a": "b"})
    obj["metadata"]["unknownMeta"] = 1
    obj["top"] = 1

    pruned = schema.prune(obj)

    assert set(pruned) == {"apiVersion", "kind", "metadata", "spec"}
    assert "unknownMeta" not in pruned["metadata"]
    assert "bogus" not in pruned["spec"]
    assert pruned["spec"]["extra"] == {"anything": {"goes": 1}}
    assert pruned["spec"]["labels"] == {"a": "b"}
    assert sorted(schema.unknown_fields(obj)) == ["metadata.unknownMeta", "spec.bogus", "top"]


def test_prune_keeps_embedded_resource_envelope(schema: CustomResourceSchema) -> None:
    obj = widget(resource={"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "x": 1}})

    pruned = schema.prune(obj)

    assert pruned["spec"]["resource"]["metadata"] == {"name": "p"}


def test_prune_drops_null_of_non_nullable_field(schema: CustomResourceSchema) -> None:
    pruned = schema.prune(widget(mode=None, note=None))

    assert "mode" not in pruned["spec"] and pruned["spec"]["note"] is None


def test_default_fills_nested_values_only_where_parent_exists(
    schema: CustomResourceSchema,
) -> None:
    obj = widget(env=[{"name": "A"}])

    defaulted = schema.default(obj)

    assert defaulted["spec"]["mode"] == "OnSuccess"
    assert defaulted["spec"]["limits"] == {"cpu": "1"}  # `default: {}` creates the parent
    assert "probe" not in defaulted["spec"]  # no default on the parent: nothing created
    assert defaulted["spec"]["env"] == [{"name": "A", "value": ""}]
    assert "status" not in defaulted
    assert obj["spec"] == {"size": 1, "env": [{"name": "A"}]}  # input untouched


def test_default_fills_inside_existing_parent(schema: CustomResourceSchema) -> None:
    defaulted = schema.default(widget(probe={}))

    assert defaulted["spec"]["probe"] == {"period": 10}


def test_valid_object_has_no_causes(schema: CustomResourceSchema) -> None:
    obj = schema.default(widget(port="http", note=None, tags=["a", "b"]))

    assert schema.validate(obj) == []


def test_minimum_violation_is_worded_like_the_api_server(schema: CustomResourceSchema) -> None:
    causes = schema.validate(widget(size=-1))

    assert causes == [
        {
            "reason": "FieldValueInvalid",
            "message": "Invalid value: -1: spec.size in body should be greater than or equal to 0",
            "field": "spec.size",
        }
    ]


def test_required_field(schema: CustomResourceSchema) -> None:
    obj = widget()
    del obj["spec"]["size"]

    assert by_field(schema.validate(obj)) == {"spec.size": ("FieldValueRequired", "Required value")}


def test_enum_lists_supported_values(schema: CustomResourceSchema) -> None:
    assert by_field(schema.validate(widget(mode="x"))) == {
        "spec.mode": (
            "FieldValueNotSupported",
            'Unsupported value: "x": supported values: "OnSuccess", "Always"',
        )
    }


def test_wrong_type_shows_the_json_type(schema: CustomResourceSchema) -> None:
    assert by_field(schema.validate(widget(size="3"))) == {
        "spec.size": (
            "FieldValueTypeInvalid",
            'Invalid value: "string": spec.size in body must be of type integer: "string"',
        )
    }


def test_int_or_string_rejects_other_types(schema: CustomResourceSchema) -> None:
    assert schema.validate(widget(port=8080)) == []
    assert by_field(schema.validate(widget(port=[1])))["spec.port"][0] == "FieldValueTypeInvalid"


def test_null_only_for_nullable_fields(schema: CustomResourceSchema) -> None:
    causes = by_field(schema.validate(widget(note=None, mode=None)))

    assert list(causes) == ["spec.mode"]


def test_nested_array_paths_use_indexes(schema: CustomResourceSchema) -> None:
    causes = by_field(schema.validate(widget(env=[{"name": "OK"}, {"name": "bad"}, {}])))

    assert causes["spec.env[1].name"] == (
        "FieldValueInvalid",
        "Invalid value: \"bad\": spec.env[1].name in body should match '^[A-Z_]+$'",
    )
    assert causes["spec.env[2].name"] == ("FieldValueRequired", "Required value")


def test_list_map_and_set_duplicates(schema: CustomResourceSchema) -> None:
    causes = by_field(schema.validate(widget(env=[{"name": "A"}, {"name": "A"}], tags=["x", "x"])))

    assert causes["spec.env[1]"] == ("FieldValueDuplicate", 'Duplicate value: {"name":"A"}')
    assert causes["spec.tags[1]"] == ("FieldValueDuplicate", 'Duplicate value: "x"')


def test_date_time_format(schema: CustomResourceSchema) -> None:
    good = widget()
    good["status"] = {"when": "2026-11-24T13:00:00Z"}
    bad = widget()
    bad["status"] = {"when": "yesterday"}

    assert schema.validate(good) == []
    assert by_field(schema.validate(bad))["status.when"][0] == "FieldValueTypeInvalid"


def test_embedded_resource_needs_kind_and_api_version(schema: CustomResourceSchema) -> None:
    causes = by_field(schema.validate(widget(resource={"metadata": {}})))

    assert causes["spec.resource.kind"] == (
        "FieldValueRequired",
        "Required value: must not be empty",
    )
    assert "spec.resource.apiVersion" in causes


def test_metadata_name_must_be_a_dns_subdomain(schema: CustomResourceSchema) -> None:
    obj = widget()
    obj["metadata"]["name"] = "Bad_Name"

    reason, message = by_field(schema.validate(obj))["metadata.name"]

    assert reason == "FieldValueInvalid"
    assert message.startswith('Invalid value: "Bad_Name": a lowercase RFC 1123 subdomain')


def test_crd_may_constrain_metadata_name() -> None:
    crd = copy.deepcopy(WIDGET_CRD)
    root = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    root["properties"]["metadata"] = {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 5}},
    }
    schema = CustomResourceSchema.from_crd(crd, "v1")
    obj = widget()
    obj["metadata"]["name"] = "too-long"

    assert by_field(schema.validate(obj)) == {
        "metadata.name": ("FieldValueTooLong", "Too long: may not be more than 5 bytes")
    }
    assert schema.prune(obj)["metadata"] == obj["metadata"]


def test_metadata_needs_name_or_generate_name(schema: CustomResourceSchema) -> None:
    obj = widget()
    obj["metadata"] = {"generateName": "w-"}
    unnamed = widget()
    unnamed["metadata"] = {}

    assert schema.validate(obj) == []
    assert by_field(schema.validate(unnamed))["metadata.name"] == (
        "FieldValueRequired",
        "Required value: name or generateName is required",
    )


def test_transition_rule_checked_on_update_only(schema: CustomResourceSchema) -> None:
    old = widget(size=1)
    new = widget(size=2)

    assert schema.validate(new) == []
    assert schema.validate(new, old) == [
        {
            "reason": "FieldValueInvalid",
            "message": 'Invalid value: "object": spec is immutable',
            "field": "spec",
        }
    ]
    assert schema.validate(copy.deepcopy(old), old) == []


def test_unchanged_invalid_value_is_ratcheted_on_update() -> None:
    schema = with_rules()
    old = widget(size=-1)  # stored before the CRD tightened
    touched = widget(size=-1)
    touched["status"] = {"phase": "Done"}

    assert schema.validate(touched, old) == []
    assert list(by_field(schema.validate(widget(size=-2), old))) == ["spec.size"]


def test_missing_required_field_ratchets_only_while_its_parent_is_unchanged() -> None:
    schema = with_rules()
    old = widget()
    del old["spec"]["size"]
    changed = copy.deepcopy(old)
    changed["spec"]["mode"] = "Always"

    assert schema.validate(copy.deepcopy(old), old) == []
    assert list(by_field(schema.validate(changed, old))) == ["spec.size"]


def test_rule_ratchets_on_the_node_that_declares_it() -> None:
    schema = with_rules({"rule": "self.size <= 5", "fieldPath": ".size"})
    old = widget(size=6)
    changed = widget(size=6, mode="Always")

    assert schema.validate(copy.deepcopy(old), old) == []
    assert list(by_field(schema.validate(changed, old))) == ["spec.size"]


def test_status_change_does_not_trip_the_spec_transition_rule(
    schema: CustomResourceSchema,
) -> None:
    old = widget()
    new = widget()
    new["status"] = {"phase": "Done"}

    assert schema.validate(new, old, subresource="status") == []


def test_status_subresource_checks_the_status_schema_only(schema: CustomResourceSchema) -> None:
    old = widget(size=-1)
    new = widget(size=-1)
    new["status"] = {"when": "soon"}

    causes = by_field(schema.validate(new, old, subresource="status"))

    assert list(causes) == ["status.when"]


def test_transition_rule_without_message_names_the_rule() -> None:
    crd = copy.deepcopy(WIDGET_CRD)
    spec_schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec_schema["x-kubernetes-validations"] = [{"rule": "self == oldSelf"}]
    schema = CustomResourceSchema.from_crd(crd, "v1")

    causes = schema.validate(widget(size=2), widget(size=1))

    assert causes[0]["message"] == 'Invalid value: "object": failed rule: self == oldSelf'


def test_unevaluated_rules_are_listed() -> None:
    crd = copy.deepcopy(WIDGET_CRD)
    spec_schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec_schema["x-kubernetes-validations"].append({"rule": "quantity(self.q).isZero()"})

    schema = CustomResourceSchema.from_crd(crd, "v1")

    assert schema.unevaluated_rules() == [("spec", "quantity(self.q).isZero()")]
    assert schema.validate(widget()) == []


def with_rules(*rules: dict[str, Any]) -> CustomResourceSchema:
    crd = copy.deepcopy(WIDGET_CRD)
    spec_schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec_schema["x-kubernetes-validations"] = list(rules)
    return CustomResourceSchema.from_crd(crd, "v1")


def test_cel_rule_failure_names_field_path_and_reason() -> None:
    schema = with_rules(
        {
            "rule": "self.size <= 5",
            "fieldPath": ".size",
            "reason": "FieldValueForbidden",
            "message": "too big",
        }
    )

    assert schema.validate(widget(size=5)) == []
    assert schema.validate(widget(size=6)) == [
        {"reason": "FieldValueForbidden", "message": "Forbidden: too big", "field": "spec.size"}
    ]


@pytest.mark.parametrize(
    ("rule", "spec", "passes"),
    [
        ("!has(self.note) || self.note.startsWith('n')", {"note": "nice"}, True),
        ("!has(self.note) || self.note.startsWith('n')", {"note": "bad"}, False),
        ("!has(self.note) || self.note.startsWith('n')", {}, True),
        ("self.tags.all(t, t.matches('^[a-z]+$'))", {"tags": ["ab", "c"]}, True),
        ("self.tags.all(t, t.matches('^[a-z]+$'))", {"tags": ["ab", "C"]}, False),
        ("self.tags.exists(t, t == 'x') ? self.size > 2 : true", {"tags": ["x"]}, False),
        ("size(self.tags) + 1 == 3 && 'a' in self.tags", {"tags": ["a", "b"]}, True),
        ("self.size % 2 == 1 && -self.size < 0", {}, True),
        ("self.labels['team'] != 'x'", {"labels": {"team": "y"}}, True),
    ],
)
def test_cel_subset(rule: str, spec: dict[str, Any], passes: bool) -> None:
    causes = with_rules({"rule": rule}).validate(widget(**spec))

    assert (causes == []) is passes, causes


def test_cel_runtime_error_does_not_reject() -> None:
    # A missing key is an evaluation error in CEL; the sandbox skips the rule, never rejects.
    assert with_rules({"rule": "self.note == 'x'"}).validate(widget()) == []


# -- the project's own CRDs ---------------------------------------------------------------


def load_crd(name: str) -> dict[str, Any]:
    crd: dict[str, Any] = yaml.safe_load((ROOT / "crds" / name).read_text())
    return crd


def agent_pool(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "agentpool.dev/v1alpha1",
        "kind": "AgentPool",
        "metadata": {"name": "linux", "namespace": "default"},
        "spec": {
            "template": {"spec": {"containers": [{"name": "agent", "image": "busybox"}]}},
            **spec,
        },
    }


def build_step(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "agentpool.dev/v1alpha1",
        "kind": "BuildStep",
        "metadata": {"name": "compile", "namespace": "default"},
        "spec": {"pool": "linux", "script": "make", **spec},
    }


def test_agentpool_defaults_are_filled_in() -> None:
    schema = CustomResourceSchema.from_crd(load_crd("agentpools.yaml"), "v1alpha1")

    spec = schema.default(schema.prune(agent_pool()))["spec"]

    assert (spec["minIdle"], spec["maxAgents"], spec["idleTimeout"]) == (0, 10, "10m")
    assert spec["apiConnections"] == {"max": 32, "queueTimeout": "30s"}
    assert spec["readiness"] == {"tolerateVirtualKubeletPending": True}
    assert spec["sessions"]["batchWindow"] == "50ms"


def test_agentpool_negative_min_idle_is_rejected() -> None:
    schema = CustomResourceSchema.from_crd(load_crd("agentpools.yaml"), "v1alpha1")
    obj = schema.default(schema.prune(agent_pool(minIdle=-1)))

    assert by_field(schema.validate(obj))["spec.minIdle"] == (
        "FieldValueInvalid",
        "Invalid value: -1: spec.minIdle in body should be greater than or equal to 0",
    )


def test_agentpool_template_errors_name_the_container() -> None:
    schema = CustomResourceSchema.from_crd(load_crd("agentpools.yaml"), "v1alpha1")
    obj = agent_pool()
    obj["spec"]["template"]["spec"]["containers"].append({"image": "alpine"})

    causes = by_field(schema.validate(schema.default(schema.prune(obj))))

    assert causes == {
        "spec.template.spec.containers[1].name": ("FieldValueRequired", "Required value")
    }


def test_buildstep_spec_is_immutable() -> None:
    schema = CustomResourceSchema.from_crd(load_crd("buildsteps.yaml"), "v1alpha1")
    old = schema.default(schema.prune(build_step()))
    new = copy.deepcopy(old)
    new["spec"]["script"] = "make test"

    assert schema.validate(old) == []
    assert [c["field"] for c in schema.validate(new, old)] == ["spec"]


def test_agentpool_min_idle_cannot_exceed_max_agents() -> None:
    schema = CustomResourceSchema.from_crd(load_crd("agentpools.yaml"), "v1alpha1")
    obj = schema.default(schema.prune(agent_pool(minIdle=5, maxAgents=2)))

    causes = by_field(schema.validate(obj))

    assert list(causes) == ["spec.minIdle"]
    assert causes["spec.minIdle"][1].startswith('Invalid value: "object": ')


def test_buildstep_requires_pool_and_script() -> None:
    schema = CustomResourceSchema.from_crd(load_crd("buildsteps.yaml"), "v1alpha1")
    obj = build_step()
    obj["spec"] = {}

    causes = by_field(schema.validate(schema.default(obj)))

    assert causes["spec.pool"] == ("FieldValueRequired", "Required value")
    assert causes["spec.script"] == ("FieldValueRequired", "Required value")


# -- built-in kinds ----------------------------------------------------------------------


def pod(*containers: dict[str, Any], name: str = "agent-1") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"containers": list(containers)},
    }


def test_valid_pod_has_no_causes() -> None:
    obj = pod({"name": "agent", "image": "busybox", "ports": [{"containerPort": 80}]})

    assert validate_builtin("pods", obj) == []


def test_pod_needs_a_container() -> None:
    assert by_field(validate_builtin("pods", pod())) == {
        "spec.containers": ("FieldValueRequired", "Required value")
    }


def test_pod_containers_need_unique_label_names_and_images() -> None:
    causes = by_field(
        validate_builtin("pods", pod({"name": "a", "image": "i"}, {"name": "a"}, {"name": "B_"}))
    )

    assert causes["spec.containers[1].name"] == ("FieldValueDuplicate", 'Duplicate value: "a"')
    assert causes["spec.containers[1].image"] == ("FieldValueRequired", "Required value")
    assert causes["spec.containers[2].name"][1].startswith(
        'Invalid value: "B_": a lowercase RFC 1123 label'
    )


def test_pod_field_types_come_from_the_definitions() -> None:
    obj = pod({"name": "a", "image": "i", "ports": [{"containerPort": "eighty"}]})

    assert by_field(validate_builtin("pods", obj))["spec.containers[0].ports[0].containerPort"] == (
        "FieldValueTypeInvalid",
        'Invalid value: "string": spec.containers[0].ports[0].containerPort in body must be of '
        'type integer: "string"',
    )


def test_pod_restart_policy_is_an_enum() -> None:
    obj = pod({"name": "a", "image": "i"})
    obj["spec"]["restartPolicy"] = "Sometimes"

    assert by_field(validate_builtin("pods", obj))["spec.restartPolicy"] == (
        "FieldValueNotSupported",
        'Unsupported value: "Sometimes": supported values: "Always", "OnFailure", "Never"',
    )


def test_deployment_pod_template_is_checked() -> None:
    obj = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "op"},
        "spec": {"selector": {}, "template": {"spec": {"containers": [{"name": "op"}]}}},
    }

    assert by_field(validate_builtin("deployments.apps", obj)) == {
        "spec.template.spec.containers[0].image": ("FieldValueRequired", "Required value")
    }


def test_namespace_name_must_be_a_label() -> None:
    obj = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a.b"}}

    _, message = by_field(validate_builtin("namespaces", obj))["metadata.name"]

    assert message.startswith('Invalid value: "a.b": a lowercase RFC 1123 label')


def test_configmap_and_rbac_are_checked() -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": 1}}
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "r"},
        "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}],
    }

    assert by_field(validate_builtin("configmaps", cm))["data.k"][0] == "FieldValueTypeInvalid"
    assert validate_builtin("roles.rbac.authorization.k8s.io", role) == []


def test_unknown_resource_is_not_checked() -> None:
    assert validate_builtin("widgets.example.dev", {"anything": 1}) == []


def test_unknown_builtin_fields_follow_the_definitions() -> None:
    obj = pod({"name": "a", "imagee": "busybox", "resources": {"limits": {"cpu": "1"}}})
    obj["metadata"]["bogus"] = 1
    obj["spec"]["nodeSelector"] = {"any": "key"}

    assert unknown_builtin_fields("pods", obj) == ["metadata.bogus", "spec.containers[0].imagee"]


def test_project_crds_have_no_unknown_fields() -> None:
    for name in ("agentpools.yaml", "buildsteps.yaml"):
        crd = load_crd(name)

        assert unknown_builtin_fields("customresourcedefinitions.apiextensions.k8s.io", crd) == []
        assert validate_builtin("customresourcedefinitions.apiextensions.k8s.io", crd) == []


@pytest.mark.parametrize("name", ["agentpools.yaml", "buildsteps.yaml"])
def test_every_rule_of_the_project_crds_is_evaluated(name: str) -> None:
    # The sandbox skips CEL outside its subset; the project's own rules must all be enforced.
    schema = CustomResourceSchema.from_crd(load_crd(name), "v1alpha1")

    assert schema.unevaluated_rules() == []
