"""Structural schemas of CustomResourceDefinitions: pruning, defaulting and validation.

Order on a write, as in the API server: ``schema.validate(schema.default(schema.prune(obj)), old)``.

Validation follows apiextensions-apiserver: OpenAPI v3 value checks worded like kube-openapi
(``spec.minIdle in body should be greater than or equal to 0``) wrapped in field errors
(``FieldValueInvalid``, ``FieldValueRequired``, ``FieldValueNotSupported``, ...), plus the
Kubernetes extensions: ``nullable``, ``x-kubernetes-int-or-string``,
``x-kubernetes-preserve-unknown-fields``, ``x-kubernetes-embedded-resource``,
``x-kubernetes-list-type`` (set/map uniqueness) and ``x-kubernetes-validations``: rules in the CEL
subset of `agentpool_sandbox.cel` are evaluated on every node (transition rules, those naming
``oldSelf`` such as ``self == oldSelf``, on update only and where the node exists in both
objects); other rules and ``messageExpression`` are not implemented, and
`unevaluated_rules()` lists the skipped rules so the differences can be documented. On update,
errors on unchanged values are ratcheted away as in Kubernetes 1.33+ (not inside lists).

With ``subresource="status"`` only ``status`` is checked against the schema (as the status
strategy does); metadata rules and CEL rules still cover the whole object.
"""

from __future__ import annotations

import copy
import datetime
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from agentpool_sandbox import causes, cel
from agentpool_sandbox.builtin import decode_errors, unknown_builtin_fields, validate_builtin
from agentpool_sandbox.causes import Cause, PathPart, field_path, json_type
from agentpool_sandbox.objectmeta import prune_object_meta, validate_object_meta

__all__ = [
    "CustomResourceSchema",
    "decode_errors",
    "unknown_builtin_fields",
    "validate_builtin",
]

Schema = dict[str, Any]

_ROOT_KEPT = ("apiVersion", "kind", "metadata")


@dataclass(frozen=True)
class CustomResourceSchema:
    """One served version of a CRD: its structural schema and identity."""

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool
    schema: Schema
    subresources: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_crd(cls, crd: dict[str, Any], version: str) -> CustomResourceSchema:
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        for served in spec.get("versions") or []:
            if served.get("name") == version:
                schema = ((served.get("schema") or {}).get("openAPIV3Schema")) or {
                    "type": "object",
                    "x-kubernetes-preserve-unknown-fields": True,
                }
                return cls(
                    group=str(spec.get("group", "")),
                    version=version,
                    kind=str(names.get("kind", "")),
                    plural=str(names.get("plural", "")),
                    namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                    schema=schema,
                    subresources=dict(served.get("subresources") or {}),
                )
        raise KeyError(f"CRD {crd.get('metadata', {}).get('name')!r} has no version {version!r}")

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources

    # -- pruning -------------------------------------------------------------------------

    def prune(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Drop fields the schema does not know, and nulls of non-nullable fields."""
        pruned = _prune(obj, self.schema, root=True)
        return pruned if isinstance(pruned, dict) else {}

    def unknown_fields(self, obj: dict[str, Any]) -> list[str]:
        """Paths `prune` would drop: what `fieldValidation=Strict` reports as unknown fields."""
        return list(_unknown(obj, self.schema, [], root=True))

    # -- defaulting ----------------------------------------------------------------------

    def default(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Fill `default:` values wherever the parent object exists; returns a new object."""
        result = copy.deepcopy(obj)
        _default(result, self.schema)
        return result

    # -- validation ----------------------------------------------------------------------

    def validate(
        self,
        obj: dict[str, Any],
        old: dict[str, Any] | None = None,
        subresource: str | None = None,
    ) -> list[Cause]:
        """All schema violations of `obj`; with `old`, also the transition rules.

        On update, errors on values that did not change are dropped (validation ratcheting,
        on by default since Kubernetes 1.33), so tightening a CRD does not lock objects stored
        before; transition rules never ratchet.
        """
        found = validate_object_meta(obj.get("metadata"))
        validator = _Validator()
        if subresource == "status":
            status_schema = _properties(self.schema).get("status")
            checked = (
                validator.node(obj["status"], status_schema, ["status"])
                if "status" in obj and status_schema is not None
                else []
            )
        else:
            checked = validator.node(obj, self.schema, [])
        for cause in checked:
            if old is None or not _unchanged(obj, old, validator.paths.get(cause["field"])):
                found.append(cause)
        for cause, node, transition in _rule_causes(
            obj, old, self.schema, [], has_old=old is not None
        ):
            if old is None or transition or not _unchanged(obj, old, node):
                found.append(cause)
        return found

    def unevaluated_rules(self) -> list[tuple[str, str]]:
        """`(path, rule)` of every x-kubernetes-validations rule this sandbox does not evaluate."""
        skipped = []
        for path, rule in _rules(self.schema, []):
            try:
                cel.compile_rule(rule)
            except cel.Unsupported:
                skipped.append((field_path(path), rule))
        return skipped


# -- schema navigation -------------------------------------------------------------------


def _properties(schema: Schema) -> dict[str, Schema]:
    props = schema.get("properties")
    return props if isinstance(props, dict) else {}


def _additional(schema: Schema) -> Schema | None:
    extra = schema.get("additionalProperties")
    return extra if isinstance(extra, dict) else None


def _keeps_unknown(schema: Schema) -> bool:
    return bool(schema.get("x-kubernetes-preserve-unknown-fields")) or (
        schema.get("additionalProperties") is True
    )


def _rules(schema: Schema, path: list[PathPart]) -> Iterator[tuple[list[PathPart], str]]:
    for rule in schema.get("x-kubernetes-validations") or []:
        yield path, str(rule.get("rule", ""))
    for name, sub in _properties(schema).items():
        yield from _rules(sub, [*path, name])
    extra = _additional(schema)
    if extra is not None:
        yield from _rules(extra, [*path, "*"])
    items = schema.get("items")
    if isinstance(items, dict):
        yield from _rules(items, [*path, "*"])


# -- pruning -----------------------------------------------------------------------------


def _prune(value: Any, schema: Schema, *, root: bool = False) -> Any:
    if isinstance(value, dict):
        is_resource = root or bool(schema.get("x-kubernetes-embedded-resource"))
        props = _properties(schema)
        extra = _additional(schema)
        keep_all = _keeps_unknown(schema)
        out: dict[str, Any] = {}
        for key, item in value.items():
            if is_resource and key in _ROOT_KEPT:
                out[key] = prune_object_meta(item) if key == "metadata" else item
            elif key in props:
                if item is None and not props[key].get("nullable"):
                    continue
                out[key] = _prune(item, props[key])
            elif extra is not None:
                out[key] = _prune(item, extra)
            elif keep_all:
                out[key] = copy.deepcopy(item)
        return out
    if isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, dict):
            return [_prune(item, items) for item in value]
        return copy.deepcopy(value)
    return value


def _unknown(
    value: Any, schema: Schema, path: list[PathPart], *, root: bool = False
) -> Iterator[str]:
    if isinstance(value, dict):
        is_resource = root or bool(schema.get("x-kubernetes-embedded-resource"))
        props = _properties(schema)
        extra = _additional(schema)
        for key, item in value.items():
            if is_resource and key in _ROOT_KEPT:
                if key == "metadata" and isinstance(item, dict):
                    yield from (
                        field_path([*path, key, k])
                        for k in item
                        if k not in prune_object_meta(item)
                    )
            elif key in props:
                yield from _unknown(item, props[key], [*path, key])
            elif extra is not None:
                yield from _unknown(item, extra, [*path, key])
            elif not _keeps_unknown(schema):
                yield field_path([*path, key])
    elif isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, dict):
            for index, item in enumerate(value):
                yield from _unknown(item, items, [*path, index])


# -- defaulting --------------------------------------------------------------------------


def _default(value: Any, schema: Schema) -> None:
    if isinstance(value, dict):
        for key, sub in _properties(schema).items():
            if "default" in sub and (
                key not in value or (value[key] is None and not sub.get("nullable"))
            ):
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                _default(value[key], sub)
        extra = _additional(schema)
        if extra is not None:
            for key, item in value.items():
                if key not in _properties(schema):
                    _default(item, extra)
    elif isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, dict):
            for item in value:
                _default(item, items)


# -- validation --------------------------------------------------------------------------

_TYPE_CHECKS = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "integer": lambda v: (
        (isinstance(v, int) and not isinstance(v, bool))
        or (isinstance(v, float) and v.is_integer())
    ),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
}


def _body(path: list[PathPart]) -> str:
    return f"{field_path(path) or 'body'} in body"


def _is_date_time(value: str) -> bool:
    try:
        datetime.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return False
    return "T" in value.upper()


def _is_date(value: str) -> bool:
    try:
        datetime.date.fromisoformat(value)
    except ValueError:
        return False
    return True


_STRING_FORMATS = {"date-time": _is_date_time, "date": _is_date}


@lru_cache(maxsize=512)
def _pattern(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


class _Validator:
    """Walks one object against one schema, collecting causes."""

    def __init__(self) -> None:
        # field path of each cause -> the node whose change decides ratcheting
        self.paths: dict[str, list[PathPart]] = {}

    def node(self, value: Any, schema: Schema, path: list[PathPart]) -> list[Cause]:
        where = field_path(path)
        self.paths.setdefault(where, path)
        if value is None:
            if schema.get("nullable") or not schema.get("type"):
                return []
            detail = f'{_body(path)} must be of type {schema["type"]}: "null"'
            return [causes.type_invalid(where, "null", detail)]
        if schema.get("x-kubernetes-int-or-string"):
            if isinstance(value, bool) or not isinstance(value, int | str):
                detail = f"{_body(path)} must be of type integer-or-string"
                return [causes.type_invalid(where, json_type(value), detail)]
        else:
            expected = schema.get("type")
            if (
                isinstance(expected, str)
                and expected in _TYPE_CHECKS
                and not _TYPE_CHECKS[expected](value)
            ):
                actual = json_type(value)
                detail = f'{_body(path)} must be of type {expected}: "{actual}"'
                return [causes.type_invalid(where, actual, detail)]
        found = self.values(value, schema, path)
        found.extend(self.combinators(value, schema, path))
        if isinstance(value, dict):
            found.extend(self.obj(value, schema, path))
        elif isinstance(value, list):
            found.extend(self.array(value, schema, path))
        return found

    def values(self, value: Any, schema: Schema, path: list[PathPart]) -> list[Cause]:
        where, found = field_path(path), []
        enum = schema.get("enum")
        if isinstance(enum, list) and value not in enum:
            found.append(causes.not_supported(where, value, enum))
        if isinstance(value, str):
            found.extend(self.string(value, schema, path))
        if isinstance(value, int | float) and not isinstance(value, bool):
            found.extend(self.number(value, schema, path))
        return found

    def string(self, value: str, schema: Schema, path: list[PathPart]) -> list[Cause]:
        where, found = field_path(path), []
        max_length = schema.get("maxLength")
        if isinstance(max_length, int) and len(value) > max_length:
            found.append(causes.too_long(where, max_length))
        min_length = schema.get("minLength")
        if isinstance(min_length, int) and len(value) < min_length:
            detail = f"{_body(path)} should be at least {min_length} chars long"
            found.append(causes.invalid(where, value, detail))
        pattern = schema.get("pattern")
        if isinstance(pattern, str) and not _pattern(pattern).search(value):
            found.append(causes.invalid(where, value, f"{_body(path)} should match '{pattern}'"))
        check = _STRING_FORMATS.get(str(schema.get("format")))
        if check is not None and not check(value):
            detail = (
                f"{_body(path)} must be of type {schema['format']}: {causes.shown_value(value)}"
            )
            found.append(causes.type_invalid(where, value, detail))
        return found

    def number(self, value: float, schema: Schema, path: list[PathPart]) -> list[Cause]:
        where, found = field_path(path), []
        minimum = schema.get("minimum")
        if isinstance(minimum, int | float):
            if schema.get("exclusiveMinimum") and value <= minimum:
                detail = f"{_body(path)} should be greater than {_number(minimum)}"
                found.append(causes.invalid(where, value, detail))
            elif value < minimum:
                detail = f"{_body(path)} should be greater than or equal to {_number(minimum)}"
                found.append(causes.invalid(where, value, detail))
        maximum = schema.get("maximum")
        if isinstance(maximum, int | float):
            if schema.get("exclusiveMaximum") and value >= maximum:
                detail = f"{_body(path)} should be less than {_number(maximum)}"
                found.append(causes.invalid(where, value, detail))
            elif value > maximum:
                detail = f"{_body(path)} should be less than or equal to {_number(maximum)}"
                found.append(causes.invalid(where, value, detail))
        multiple = schema.get("multipleOf")
        if isinstance(multiple, int | float) and multiple > 0:
            ratio = value / multiple
            if not math.isclose(ratio, round(ratio)):
                detail = f"{_body(path)} should be a multiple of {_number(multiple)}"
                found.append(causes.invalid(where, value, detail))
        return found

    def combinators(self, value: Any, schema: Schema, path: list[PathPart]) -> list[Cause]:
        where, found = field_path(path), []
        for sub in schema.get("allOf") or []:
            found.extend(self.node(value, sub, path))
        any_of = schema.get("anyOf")
        if any_of and not any(not self.node(value, sub, path) for sub in any_of):
            detail = f"{_body(path)} must validate at least one schema (anyOf)"
            found.append(causes.invalid(where, value, detail))
        one_of = schema.get("oneOf")
        if one_of and sum(1 for sub in one_of if not self.node(value, sub, path)) != 1:
            detail = f"{_body(path)} must validate one and only one schema (oneOf)"
            found.append(causes.invalid(where, value, detail))
        negated = schema.get("not")
        if isinstance(negated, dict) and not self.node(value, negated, path):
            detail = f"{_body(path)} must not validate the schema (not)"
            found.append(causes.invalid(where, value, detail))
        return found

    def obj(self, value: dict[str, Any], schema: Schema, path: list[PathPart]) -> list[Cause]:
        found: list[Cause] = []
        if schema.get("x-kubernetes-embedded-resource"):
            for key in ("apiVersion", "kind"):
                if not value.get(key):
                    found.append(causes.required(field_path([*path, key]), "must not be empty"))
            meta = value.get("metadata")
            if isinstance(meta, dict):
                found.extend(
                    c
                    for c in validate_object_meta(meta, path=field_path([*path, "metadata"]))
                    if c["reason"] != "FieldValueRequired"
                )
        for key in schema.get("required") or []:
            if key not in value:
                missing = field_path([*path, key])
                self.paths.setdefault(missing, path)  # a required field ratchets on its parent
                found.append(causes.required(missing))
        found.extend(_size_causes(value, schema, path, "Properties", "properties"))
        props, extra = _properties(schema), _additional(schema)
        for key, item in value.items():
            if not path and key == "metadata":
                # A CRD may only constrain name and generateName; ObjectMeta rules do the rest.
                found.extend(self.root_metadata(item, props.get("metadata")))
                continue
            if key in props:
                found.extend(self.node(item, props[key], [*path, key]))
            elif extra is not None:
                found.extend(self.node(item, extra, [*path, key]))
        return found

    def root_metadata(self, meta: Any, schema: Schema | None) -> list[Cause]:
        if not isinstance(meta, dict) or not isinstance(schema, dict):
            return []
        props = _properties(schema)
        found: list[Cause] = []
        for key in ("name", "generateName"):
            if key in props and isinstance(meta.get(key), str):
                found.extend(self.node(meta[key], props[key], ["metadata", key]))
        return found

    def array(self, value: list[Any], schema: Schema, path: list[PathPart]) -> list[Cause]:
        where, found = field_path(path), []
        found.extend(_size_causes(value, schema, path, "Items", "items"))
        list_type = schema.get("x-kubernetes-list-type")
        if schema.get("uniqueItems") and list_type != "set" and _first_duplicate(value) >= 0:
            detail = f"{_body(path)} shouldn't contain duplicates"
            found.append(causes.invalid(where, value, detail))
        if list_type == "set":
            seen: list[Any] = []
            for index, item in enumerate(value):
                if item in seen:
                    found.append(causes.duplicate(field_path([*path, index]), item))
                seen.append(item)
        elif list_type == "map":
            keys = [str(k) for k in schema.get("x-kubernetes-list-map-keys") or []]
            seen_keys: set[str] = set()
            for index, item in enumerate(value):
                if not isinstance(item, dict):
                    continue
                key = {k: item.get(k) for k in keys}
                marker = repr(sorted(key.items()))
                if marker in seen_keys:
                    found.append(causes.duplicate(field_path([*path, index]), key))
                seen_keys.add(marker)
        items = schema.get("items")
        if isinstance(items, dict):
            for index, item in enumerate(value):
                found.extend(self.node(item, items, [*path, index]))
        return found


def _size_causes(
    value: dict[str, Any] | list[Any], schema: Schema, path: list[PathPart], of: str, noun: str
) -> list[Cause]:
    """`max<of>` and `min<of>` (Properties of an object, Items of an array)."""
    where, found = field_path(path), []
    most, least = schema.get(f"max{of}"), schema.get(f"min{of}")
    if isinstance(most, int) and len(value) > most:
        found.append(causes.too_many(where, len(value), most))
    if isinstance(least, int) and len(value) < least:
        detail = f"{_body(path)} should have at least {least} {noun}"
        found.append(causes.invalid(where, value, detail))
    return found


def _first_duplicate(values: list[Any]) -> int:
    for index, item in enumerate(values):
        if item in values[:index]:
            return index
    return -1


# -- transition rules --------------------------------------------------------------------


def _rule_cause(value: Any, schema: Schema, path: list[PathPart], rule: dict[str, Any]) -> Cause:
    relative = str(rule.get("fieldPath") or "")
    where = field_path(path) + relative if relative.startswith((".", "[")) else field_path(path)
    message = str(rule.get("message") or f"failed rule: {rule.get('rule', '')}")
    reason = str(rule.get("reason") or "FieldValueInvalid")
    shown = schema.get("type") or json_type(value)
    if reason == "FieldValueForbidden":
        return causes.forbidden(where, message)
    if reason == "FieldValueRequired":
        return causes.required(where, message)
    if reason == "FieldValueDuplicate":
        return causes.duplicate(where, shown)
    return causes.invalid(where, shown, message)


RuleFailure = tuple[Cause, list[PathPart], bool]  # cause, node declaring the rule, transition?


def _unchanged(new: Any, old: Any, path: list[PathPart] | None) -> bool:
    """Whether the node at `path` exists and is equal in both objects (ratcheting test)."""
    if path is None or any(isinstance(part, int) for part in path):
        return False  # list items only correlate by map keys; stay strict
    for part in path:
        if not (isinstance(new, dict) and isinstance(old, dict) and part in new and part in old):
            return False
        new, old = new[part], old[part]
    return bool(new == old)


def _rule_causes(
    new: Any, old: Any, schema: Schema, path: list[PathPart], *, has_old: bool
) -> list[RuleFailure]:
    """Evaluate `x-kubernetes-validations` on every node; transition rules only with `old`."""
    found: list[RuleFailure] = []
    for rule in schema.get("x-kubernetes-validations") or []:
        text = str(rule.get("rule", ""))
        transition = cel.references_old_self(text)
        if transition and not has_old:
            continue
        try:
            result = cel.evaluate(
                cel.compile_rule(text),
                {"self": new, "oldSelf": old} if transition else {"self": new},
            )
        except (cel.Unsupported, cel.EvaluationError):
            continue  # not evaluated: see unevaluated_rules()
        if result is False:
            found.append((_rule_cause(new, schema, path, rule), path, transition))
    if isinstance(new, dict):
        props, extra = _properties(schema), _additional(schema)
        for key, item in new.items():
            sub = props.get(key, extra)
            if sub is None or (not path and key == "metadata"):
                continue
            correlated = has_old and isinstance(old, dict) and key in old
            old_item = old[key] if correlated else None
            found.extend(_rule_causes(item, old_item, sub, [*path, key], has_old=correlated))
    elif isinstance(new, list):
        items = schema.get("items")
        if not isinstance(items, dict):
            return found
        keys = schema.get("x-kubernetes-list-map-keys") or []
        previous: dict[str, Any] = {}
        # Only map lists correlate items between versions (by key), as in Kubernetes.
        if has_old and isinstance(old, list) and schema.get("x-kubernetes-list-type") == "map":
            previous = {repr([o.get(k) for k in keys]): o for o in old if isinstance(o, dict)}
        for index, item in enumerate(new):
            marker = repr([item.get(k) for k in keys]) if isinstance(item, dict) else None
            correlated = marker is not None and marker in previous
            old_item = previous[marker] if correlated and marker is not None else None
            found.extend(_rule_causes(item, old_item, items, [*path, index], has_old=correlated))
    return found
