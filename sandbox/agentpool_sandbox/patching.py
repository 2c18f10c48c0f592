"""PATCH bodies: JSON merge patch, JSON patch, strategic merge patch and (simplified) apply."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import jsonpatch
import kubernetes_validate

from agentpool_sandbox.errors import ApiError

MERGE = "application/merge-patch+json"
JSON = "application/json-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
APPLY = "application/apply-patch+yaml"
PATCH_TYPES = (MERGE, JSON, STRATEGIC, APPLY)

Json = Any


def clone(value: Json) -> Json:
    """Deep copy of a JSON document; much cheaper than `copy.deepcopy`."""
    if isinstance(value, dict):
        return {k: clone(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clone(v) for v in value]
    return value


def merge_patch(target: Json, patch: Json) -> Json:
    """RFC 7386: objects merge recursively, null deletes, everything else replaces."""
    if not isinstance(patch, dict):
        return clone(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(target: Json, operations: Json) -> Json:
    if not isinstance(operations, list):
        raise ApiError(400, "BadRequest", "json patch must be a list of operations")
    try:
        return jsonpatch.apply_patch(target, operations)
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
        raise ApiError(422, "Invalid", f"the server rejected our request: {exc}") from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise ApiError(400, "BadRequest", f"invalid json patch: {exc}") from exc


# --- strategic merge patch -------------------------------------------------------------------

_DEFINITIONS_RELATIVE = "kubernetes-json-schema/v1.37.0-local/_definitions.json"


@functools.cache
def _definitions() -> dict[str, Any]:
    path = Path(kubernetes_validate.__file__).parent / _DEFINITIONS_RELATIVE
    loaded: dict[str, Any] = json.loads(path.read_text())["$defs"]
    return loaded


@functools.cache
def _roots() -> dict[tuple[str, str, str], str]:
    roots: dict[tuple[str, str, str], str] = {}
    for name, definition in _definitions().items():
        for gvk in definition.get("x-kubernetes-group-version-kind") or []:
            roots[(gvk.get("group", ""), gvk.get("version", ""), gvk.get("kind", ""))] = name
    return roots


def schema_for(group: str, version: str, kind: str) -> dict[str, Any]:
    """The OpenAPI definition of a built-in kind ({} when unknown: plain merge semantics)."""
    name = _roots().get((group, version, kind))
    return _definitions()[name] if name else {}


def _resolve(schema: dict[str, Any] | None) -> dict[str, Any]:
    if not schema:
        return {}
    ref = schema.get("$ref")
    if ref is None and schema.get("allOf"):
        ref = schema["allOf"][0].get("$ref")
    if ref:
        resolved: dict[str, Any] = _definitions().get(ref.rsplit("/", 1)[-1], {})
        return resolved
    return schema


def _property(schema: dict[str, Any], key: str) -> dict[str, Any]:
    prop: dict[str, Any] = (schema.get("properties") or {}).get(key) or {}
    if not prop and isinstance(schema.get("additionalProperties"), dict):
        prop = schema["additionalProperties"]
    return prop


def _is_directive(key: str) -> bool:
    return key.startswith("$")


def _strip_directives(value: Json) -> Json:
    if isinstance(value, dict):
        return {k: _strip_directives(v) for k, v in value.items() if not _is_directive(k)}
    if isinstance(value, list):
        return [_strip_directives(v) for v in value]
    return value


_DELETE = object()


def _merge_map(original: dict[str, Any], patch: dict[str, Any], schema: dict[str, Any]) -> Any:
    directive = patch.get("$patch")
    if directive == "delete":
        return _DELETE
    if directive == "replace":
        return _strip_directives(patch)
    result = dict(original)
    orders: dict[str, list[Any]] = {}
    for key, value in patch.items():
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            removed = value or []
            result[field] = [v for v in result.get(field) or [] if v not in removed]
        elif key.startswith("$setElementOrder/"):
            orders[key.split("/", 1)[1]] = value or []
    for key, value in patch.items():
        if _is_directive(key):
            continue
        if value is None:
            result.pop(key, None)
            continue
        prop = _property(schema, key)
        current = result.get(key)
        if isinstance(value, dict) and isinstance(current, dict):
            merged = _merge_map(current, value, _resolve(prop))
            if merged is _DELETE:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list) and "merge" in str(
            prop.get("x-kubernetes-patch-strategy", "")
        ).split(","):
            result[key] = _merge_list(current if isinstance(current, list) else [], value, prop)
        else:
            result[key] = _strip_directives(value)
    retain = patch.get("$retainKeys")
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    for field, order in orders.items():
        if isinstance(result.get(field), list):
            merge_key = _property(schema, field).get("x-kubernetes-patch-merge-key")
            result[field] = _reorder(result[field], order, merge_key)
    return result


def _identity(item: Any, merge_key: str | None) -> Any:
    if merge_key and isinstance(item, dict):
        return item.get(merge_key)
    return json.dumps(item, sort_keys=True)


def _reorder(items: list[Any], order: list[Any], merge_key: str | None) -> list[Any]:
    """Apply `$setElementOrder`: listed elements first in the given order, the rest after."""
    rank = {_identity(o, merge_key): i for i, o in enumerate(order)}
    return sorted(items, key=lambda item: rank.get(_identity(item, merge_key), len(rank)))


def _merge_list(original: list[Any], patch: list[Any], prop: dict[str, Any]) -> list[Any]:
    merge_key = prop.get("x-kubernetes-patch-merge-key")
    if not merge_key:
        # A set of primitives (finalizers): union, keeping the original order.
        result = list(original)
        for item in patch:
            if isinstance(item, dict) and item.get("$patch") == "replace":
                return [_strip_directives(i) for i in patch if i is not item]
            if item not in result:
                result.append(item)
        return result
    item_schema = _resolve(prop.get("items"))
    if any(isinstance(i, dict) and i.get("$patch") == "replace" for i in patch):
        return [
            _strip_directives(i)
            for i in patch
            if not (isinstance(i, dict) and i.get("$patch") == "replace")
        ]
    result = list(original)
    for item in patch:
        if not isinstance(item, dict):
            continue
        key = item.get(merge_key)
        index = next(
            (
                i
                for i, existing in enumerate(result)
                if isinstance(existing, dict) and existing.get(merge_key) == key
            ),
            None,
        )
        if item.get("$patch") == "delete":
            if index is not None:
                del result[index]
        elif index is None:
            result.append(_strip_directives(item))
        else:
            merged = _merge_map(result[index], item, item_schema)
            if merged is _DELETE:
                del result[index]
            else:
                result[index] = merged
    return result


def strategic_merge_patch(target: dict[str, Any], patch: Json, schema: dict[str, Any]) -> Json:
    """Strategic merge using the patch merge keys/strategies of the kind's OpenAPI definition."""
    if not isinstance(patch, dict):
        raise ApiError(400, "BadRequest", "strategic merge patch must be a JSON object")
    merged = _merge_map(target, patch, schema)
    if merged is _DELETE:
        raise ApiError(400, "BadRequest", "a strategic merge patch cannot delete the whole object")
    return merged
