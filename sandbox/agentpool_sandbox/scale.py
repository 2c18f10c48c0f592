"""The `scale` subresource: an `autoscaling/v1` Scale view of a workload's replicas.

Deployments, ReplicaSets and StatefulSets serve it, and so does a custom resource whose CRD
declares `subresources.scale` (`specReplicasPath`, `statusReplicasPath`, `labelSelectorPath`).
Reading it shows `spec.replicas`, `status.replicas` and the selector as a string; writing it
(PUT or any PATCH, as `kubectl scale` sends) changes only the object's replicas.
"""

from __future__ import annotations

from typing import Any

from agentpool_sandbox import errors, patching
from agentpool_sandbox.errors import field_cause
from agentpool_sandbox.resources import ResourceType

Obj = dict[str, Any]


def _segments(path: str) -> list[str]:
    return [part for part in path.split(".") if part]


def read(obj: Any, path: str) -> Any:
    for part in _segments(path):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


def selector_text(selector: Any) -> str:
    """A label selector as the string Scale reports (`app=web,tier in (a,b)`)."""
    if isinstance(selector, str):
        return selector
    if not isinstance(selector, dict):
        return ""
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression.get("key", ""), expression.get("operator", "")
        values = ",".join(sorted(str(v) for v in expression.get("values") or []))
        if operator == "In":
            parts.append(f"{key} in ({values})")
        elif operator == "NotIn":
            parts.append(f"{key} notin ({values})")
        elif operator == "Exists":
            parts.append(key)
        elif operator == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)


def of(rtype: ResourceType, obj: Obj) -> Obj:
    """The Scale of an object."""
    assert rtype.scale is not None
    spec_path, status_path, selector_path = rtype.scale
    meta = obj.get("metadata") or {}
    status: Obj = {"replicas": read(obj, status_path) or 0}
    selector = selector_text(read(obj, selector_path)) if selector_path else ""
    if selector:
        status["selector"] = selector
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            key: meta[key]
            for key in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            if key in meta
        },
        "spec": {"replicas": read(obj, spec_path) or 0},
        "status": status,
    }


def patched(current: Obj, patch_type: str, body: Any) -> Any:
    """A Scale after a patch; strategic and apply patches merge as JSON merge patches do."""
    if patch_type == patching.JSON:
        return patching.json_patch(current, body)
    if not isinstance(body, dict):
        raise errors.bad_request("the patch must be a JSON object")
    return patching.merge_patch(current, body)


def replicas_of(name: str, scale: Any) -> int:
    """The wanted replicas of a Scale someone wrote; 422 like the API server when invalid."""
    replicas = read(scale, ".spec.replicas")
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
        shown = replicas if isinstance(replicas, int) else f'"{replicas}"'
        raise errors.invalid(
            "autoscaling",
            "Scale",
            name,
            [
                field_cause(
                    "FieldValueInvalid",
                    "spec.replicas",
                    f"Invalid value: {shown}: must be greater than or equal to 0",
                )
            ],
        )
    return replicas


def replicas_patch(rtype: ResourceType, replicas: int) -> Obj:
    """A merge patch that sets the object's replicas at its spec path."""
    assert rtype.scale is not None
    patch: Obj = {}
    node = patch
    *parents, leaf = _segments(rtype.scale[0])
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = replicas
    return patch
