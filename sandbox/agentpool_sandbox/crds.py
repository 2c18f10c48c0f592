"""CustomResourceDefinitions: checking them, their status, and validating their objects."""

from __future__ import annotations

import importlib
import re
from types import ModuleType
from typing import Any

from agentpool_sandbox.errors import ApiError, Cause, field_cause
from agentpool_sandbox.resources import BUILTINS

_BUILTIN_KEYS = {t.key for t in BUILTINS}


def check_definition(crd: dict[str, Any]) -> list[Cause]:
    """The structural checks the API server makes before it accepts a CRD."""
    causes: list[Cause] = []
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    group, plural = spec.get("group"), names.get("plural")
    if not group:
        causes.append(field_cause("FieldValueRequired", "spec.group", "Required value"))
    if not plural:
        causes.append(field_cause("FieldValueRequired", "spec.names.plural", "Required value"))
    if not names.get("kind"):
        causes.append(field_cause("FieldValueRequired", "spec.names.kind", "Required value"))
    if spec.get("scope") not in ("Namespaced", "Cluster"):
        causes.append(
            field_cause(
                "FieldValueNotSupported",
                "spec.scope",
                f'Unsupported value: "{spec.get("scope", "")}": supported values: '
                '"Cluster", "Namespaced"',
            )
        )
    versions = spec.get("versions") or []
    if not versions:
        causes.append(field_cause("FieldValueRequired", "spec.versions", "Required value"))
    elif sum(1 for v in versions if v.get("storage")) != 1:
        causes.append(
            field_cause(
                "FieldValueInvalid",
                "spec.versions",
                "Invalid value: must have exactly one version marked as storage version",
            )
        )
    name = crd.get("metadata", {}).get("name", "")
    if group and plural and name != f"{plural}.{group}":
        causes.append(
            field_cause(
                "FieldValueInvalid",
                "metadata.name",
                f'Invalid value: "{name}": must be spec.names.plural+"."+spec.group',
            )
        )
    for index, version in enumerate(versions):
        schema = ((version.get("schema") or {}) if isinstance(version, dict) else {}).get(
            "openAPIV3Schema"
        )
        causes.extend(_pattern_causes(schema, f"spec.versions[{index}].schema.openAPIV3Schema"))
    if f"{plural}.{group}" in _BUILTIN_KEYS:
        causes.append(
            field_cause(
                "FieldValueInvalid", "spec.group", "Invalid value: collides with a built-in"
            )
        )
    return causes


def _pattern_causes(schema: Any, path: str) -> list[Cause]:
    """apiextensions refuses a schema whose `pattern` is no regular expression."""
    if isinstance(schema, list):
        return [c for i, item in enumerate(schema) for c in _pattern_causes(item, f"{path}[{i}]")]
    if not isinstance(schema, dict):
        return []
    found: list[Cause] = []
    pattern = schema.get("pattern")
    if isinstance(pattern, str):
        try:
            re.compile(pattern)
        except re.error as exc:
            found.append(
                field_cause(
                    "FieldValueInvalid",
                    f"{path}.pattern",
                    f'Invalid value: "{pattern}": must be a valid regular expression, but '
                    f"isn't: error parsing regexp: {exc}",
                )
            )
    for key, value in schema.items():
        if key in ("properties", "patternProperties", "definitions") and isinstance(value, dict):
            for name, sub in value.items():
                found.extend(_pattern_causes(sub, f"{path}.{key}[{name}]"))
        elif key in ("items", "additionalProperties", "not", "allOf", "anyOf", "oneOf"):
            found.extend(_pattern_causes(value, f"{path}.{key}"))
    return found


def established_status(crd: dict[str, Any], now: str) -> dict[str, Any]:
    """Status as the CRD controllers leave it once the names are accepted and served."""
    spec = crd.get("spec") or {}
    storage = [v["name"] for v in spec.get("versions") or [] if v.get("storage")]

    def condition(kind: str, reason: str, message: str) -> dict[str, Any]:
        return {
            "type": kind,
            "status": "True",
            "lastTransitionTime": now,
            "reason": reason,
            "message": message,
        }

    return {
        "conditions": [
            condition("NamesAccepted", "NoConflicts", "no conflicts found"),
            condition(
                "Established", "InitialNamesAccepted", "the initial names have been accepted"
            ),
        ],
        "acceptedNames": dict(spec.get("names") or {}),
        "storedVersions": storage,
    }


class SchemaCache:
    """One `CustomResourceSchema` per CRD version, rebuilt when the CRD changes."""

    def __init__(self) -> None:
        self._schemas: dict[tuple[str, str], Any] = {}
        self._module: ModuleType | None = None
        self._loaded = False

    def _schema_module(self) -> ModuleType | None:
        if not self._loaded:
            self._loaded = True
            try:
                self._module = importlib.import_module("agentpool_sandbox.schema")
            except ImportError:
                self._module = None
        return self._module

    def forget(self, key: str) -> None:
        for cached in [k for k in self._schemas if k[0] == key]:
            del self._schemas[cached]

    def schema(self, key: str, crd: dict[str, Any], version: str) -> Any:
        cached = (key, version)
        if cached not in self._schemas:
            module = self._schema_module()
            self._schemas[cached] = (
                module.CustomResourceSchema.from_crd(crd, version) if module else None
            )
        return self._schemas[cached]

    def admit(
        self,
        key: str,
        crd: dict[str, Any],
        version: str,
        obj: dict[str, Any],
        old: dict[str, Any] | None,
        *,
        strict: bool = False,
    ) -> tuple[dict[str, Any], list[Cause]]:
        """Prune, default and validate a custom object; returns the object to store and causes.

        `strict` is `fieldValidation=Strict` (kubectl's default): unknown fields are a 400.
        """
        schema = self.schema(key, crd, version)
        if schema is None:
            return obj, []
        if strict:
            unknown = schema.unknown_fields(obj)
            if unknown:
                raise ApiError(
                    400,
                    "BadRequest",
                    "strict decoding error: " + ", ".join(f'unknown field "{u}"' for u in unknown),
                )
        obj = schema.default(schema.prune(obj))
        causes: list[Cause] = schema.validate(obj, old)
        return obj, causes

    def unknown_builtin(self, key: str, obj: dict[str, Any]) -> list[str]:
        """Paths of fields of a built-in object that its 1.37 definition does not know."""
        module = self._schema_module()
        find = getattr(module, "unknown_builtin_fields", None) if module else None
        if find is None:
            return []
        unknown: list[str] = find(key, obj)
        return unknown

    def decode_errors(self, key: str, obj: dict[str, Any], *, whole: bool) -> list[str]:
        """Fields a typed decoder could not unmarshal (wrong JSON types): a 400, not a 422.

        Without `whole`, only `apiVersion`, `kind` and `metadata` (cheap, checked first).
        """
        module = self._schema_module()
        find = getattr(module, "decode_errors", None) if module else None
        if find is None:
            return []
        found: list[str] = find(key, obj, whole=whole)
        return found

    def validate_builtin(self, key: str, obj: dict[str, Any]) -> list[Cause]:
        module = self._schema_module()
        validate = getattr(module, "validate_builtin", None) if module else None
        if validate is None:
            return []
        causes: list[Cause] = validate(key, obj)
        return causes
