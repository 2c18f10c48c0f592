"""Built-in objects checked against the Kubernetes 1.37 definitions, plus key semantic checks."""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from typing import Any

import jsonschema

from agentpool_sandbox import causes
from agentpool_sandbox.causes import Cause, field_path, json_type
from agentpool_sandbox.definitions import BUILTIN_KINDS, REF_PREFIX, definitions
from agentpool_sandbox.objectmeta import NameRule, dns_label_errors, validate_object_meta

_NAME_RULES: dict[str, NameRule] = {"namespaces": "label", "services": "dns1035"}
_RESTART_POLICIES = ("Always", "OnFailure", "Never")
_POD_TEMPLATE_OWNERS = (
    "deployments.apps",
    "replicasets.apps",
    "statefulsets.apps",
    "daemonsets.apps",
    "jobs.batch",
)


@cache
def _validator(definition: str) -> jsonschema.protocols.Validator:
    schema = {"$ref": REF_PREFIX + definition, "$defs": definitions()}
    validator: jsonschema.protocols.Validator = jsonschema.Draft202012Validator(schema)
    return validator


def validate_builtin(resource: str, obj: dict[str, Any]) -> list[Cause]:
    """Causes a 1.37 API server would report for `obj`; [] for resources it has no rules for."""
    kind = BUILTIN_KINDS.get(resource)
    if kind is None:
        return []
    found = validate_object_meta(
        obj.get("metadata"), name_rule=_NAME_RULES.get(resource, "subdomain")
    )
    found.extend(_schema_causes(kind.definition, _without_nulls(obj)))
    spec = obj.get("spec")
    if resource == "pods" and isinstance(spec, dict):
        found.extend(pod_spec_causes(spec, "spec"))
    elif resource in _POD_TEMPLATE_OWNERS and isinstance(spec, dict):
        template = spec.get("template")
        pod_spec = template.get("spec") if isinstance(template, dict) else None
        if isinstance(pod_spec, dict):
            found.extend(pod_spec_causes(pod_spec, "spec.template.spec"))
    return _unique(found)


_OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
# Go's names for JSON types, as encoding/json words an unmarshalling error.
_GO_JSON_TYPES = {"integer": "number", "boolean": "bool"}


def decode_errors(resource: str, obj: dict[str, Any], *, whole: bool = True) -> list[str]:
    """What a typed decoder could not unmarshal: `apiVersion`/`kind`, `metadata`'s fields and,
    with `whole`, any field of a built-in kind of the wrong JSON type.

    A real API server decodes every request body into Go structs (custom resources too, for
    their `ObjectMeta`) before defaulting and validation; a value of the wrong type never gets
    that far and is a 400 BadRequest, worded like encoding/json's `cannot unmarshal` errors.
    """
    found: list[str] = []
    for key in ("apiVersion", "kind"):
        if obj.get(key) is not None and not isinstance(obj[key], str):
            found.append(_unmarshal(obj[key], key, "string"))
    meta = obj.get("metadata")
    if meta is not None and not isinstance(meta, dict):
        found.append(_unmarshal(meta, "metadata", "object"))
    kind = BUILTIN_KINDS.get(resource) if whole else None
    if kind is not None:
        errors_ = _validator(kind.definition).iter_errors(_without_nulls(obj))
    elif isinstance(meta, dict):
        errors_ = _validator(_OBJECT_META).iter_errors(_without_nulls(meta))
    else:
        return found
    prefix = [] if kind is not None else ["metadata"]
    for error in errors_:
        if error.validator not in ("type", "oneOf", "anyOf"):
            continue
        parts = [*prefix, *(p if isinstance(p, int) else str(p) for p in error.absolute_path)]
        wanted = error.validator_value if error.validator == "type" else "integer-or-string"
        if isinstance(wanted, list):
            wanted = next((t for t in wanted if t != "null"), "object")
        found.append(_unmarshal(error.instance, field_path(parts), str(wanted)))
    return list(dict.fromkeys(found))


def _unmarshal(value: Any, where: str, wanted: str) -> str:
    got = json_type(value)
    return (
        f"json: cannot unmarshal {_GO_JSON_TYPES.get(got, got)} into Go struct field {where} "
        f"of type {_GO_JSON_TYPES.get(wanted, wanted)}"
    )


def unknown_builtin_fields(resource: str, obj: dict[str, Any]) -> list[str]:
    """Paths of fields the 1.37 definitions do not know: `fieldValidation=Strict` rejects them."""
    kind = BUILTIN_KINDS.get(resource)
    if kind is None:
        return []
    return list(_unknown(obj, {"$ref": REF_PREFIX + kind.definition}, []))


def _unknown(value: Any, schema: dict[str, Any], path: list[str | int]) -> Iterator[str]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith(REF_PREFIX):
        schema = definitions().get(ref[len(REF_PREFIX) :], {})
    if isinstance(value, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            if isinstance(props, dict) and key in props:
                yield from _unknown(item, props[key], [*path, key])
            elif isinstance(extra, dict):
                yield from _unknown(item, extra, [*path, key])
            elif isinstance(props, dict) and extra is not True:
                yield field_path([*path, key])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            yield from _unknown(item, schema["items"], [*path, index])


def pod_spec_causes(spec: dict[str, Any], path: str) -> list[Cause]:
    """What `ValidatePodSpec` checks first: containers present, named uniquely, with images."""
    found: list[Cause] = []
    containers = spec.get("containers")
    if not containers:
        found.append(causes.required(f"{path}.containers"))
    policy = spec.get("restartPolicy")
    if policy is not None and policy not in _RESTART_POLICIES:
        found.append(causes.not_supported(f"{path}.restartPolicy", policy, _RESTART_POLICIES))
    names: set[str] = set()
    for group in ("initContainers", "containers", "ephemeralContainers"):
        listed = spec.get(group)
        if not isinstance(listed, list):
            continue
        for index, container in enumerate(listed):
            if not isinstance(container, dict):
                continue
            where = f"{path}.{group}[{index}]"
            name = container.get("name")
            if not name:
                found.append(causes.required(f"{where}.name"))
            elif isinstance(name, str):
                found.extend(
                    causes.invalid(f"{where}.name", name, m) for m in dns_label_errors(name)
                )
                if name in names:
                    found.append(causes.duplicate(f"{where}.name", name))
                names.add(name)
            if group != "ephemeralContainers" and not container.get("image"):
                found.append(causes.required(f"{where}.image"))
    return found


def _schema_causes(definition: str, obj: dict[str, Any]) -> list[Cause]:
    found: list[Cause] = []
    for error in _validator(definition).iter_errors(obj):
        found.extend(_cause(error))
    return found


def _cause(error: jsonschema.ValidationError) -> list[Cause]:
    parts = list(error.absolute_path)
    where = field_path([p if isinstance(p, int) else str(p) for p in parts])
    body = f"{where or 'body'} in body"
    keyword, instance, rule = error.validator, error.instance, error.validator_value
    expected: Any = rule
    if keyword == "required" and isinstance(instance, dict):
        return [
            causes.required(field_path([*parts, key])) for key in expected if key not in instance
        ]
    if keyword == "enum":
        return [causes.not_supported(where, instance, list(expected))]
    if keyword == "type":
        wanted = error.validator_value
        wanted = (
            next((t for t in wanted if t != "null"), wanted) if isinstance(wanted, list) else wanted
        )
        detail = f'{body} must be of type {wanted}: "{json_type(instance)}"'
        return [causes.type_invalid(where, json_type(instance), detail)]
    if keyword in ("oneOf", "anyOf"):
        # IntOrString and Quantity: the only unions in the definitions.
        detail = f"{body} must be of type integer-or-string"
        return [causes.type_invalid(where, json_type(instance), detail)]
    return [causes.invalid(where, instance, f"{body} {error.message}")]


def _without_nulls(value: Any) -> Any:
    # The API server decodes null as "unset"; jsonschema would trip over null in oneOf unions.
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def _unique(found: list[Cause]) -> list[Cause]:
    seen: set[tuple[str, str, str]] = set()
    unique = []
    for cause in found:
        key = (cause["field"], cause["reason"], cause["message"])
        if key not in seen:
            seen.add(key)
            unique.append(cause)
    return unique
