"""The Kubernetes 1.37 API definitions shipped in the kubernetes-validate wheel, loaded once."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

Schema = dict[str, Any]

DEFINITIONS_VERSION = "v1.37.0-local"
REF_PREFIX = "#/$defs/"


@dataclass(frozen=True)
class BuiltinKind:
    """A built-in resource the sandbox serves, and where its definition lives."""

    resource: str
    group: str
    version: str
    kind: str
    definition: str
    namespaced: bool = True

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def api_path(self) -> str:
        """`api/v1` or `apis/apps/v1`: the OpenAPI v3 document that describes this kind."""
        return f"apis/{self.group}/{self.version}" if self.group else f"api/{self.version}"


def _kind(resource: str, definition: str, *, namespaced: bool = True) -> BuiltinKind:
    # Resource keys carry their group ("deployments.apps"); core resources have none.
    *_, version, kind = definition.split(".")
    group = resource.partition(".")[2]
    return BuiltinKind(resource, group, version, kind, definition, namespaced)


_API = "io.k8s.api"
BUILTIN_KINDS: dict[str, BuiltinKind] = {
    k.resource: k
    for k in (
        _kind("namespaces", f"{_API}.core.v1.Namespace", namespaced=False),
        _kind("pods", f"{_API}.core.v1.Pod"),
        _kind("events", f"{_API}.core.v1.Event"),
        _kind("configmaps", f"{_API}.core.v1.ConfigMap"),
        _kind("secrets", f"{_API}.core.v1.Secret"),
        _kind("serviceaccounts", f"{_API}.core.v1.ServiceAccount"),
        _kind("services", f"{_API}.core.v1.Service"),
        _kind("endpoints", f"{_API}.core.v1.Endpoints"),
        _kind("persistentvolumeclaims", f"{_API}.core.v1.PersistentVolumeClaim"),
        _kind("nodes", f"{_API}.core.v1.Node", namespaced=False),
        _kind("resourcequotas", f"{_API}.core.v1.ResourceQuota"),
        _kind("limitranges", f"{_API}.core.v1.LimitRange"),
        _kind("deployments.apps", f"{_API}.apps.v1.Deployment"),
        _kind("replicasets.apps", f"{_API}.apps.v1.ReplicaSet"),
        _kind("statefulsets.apps", f"{_API}.apps.v1.StatefulSet"),
        _kind("daemonsets.apps", f"{_API}.apps.v1.DaemonSet"),
        _kind("jobs.batch", f"{_API}.batch.v1.Job"),
        _kind("cronjobs.batch", f"{_API}.batch.v1.CronJob"),
        _kind(
            "horizontalpodautoscalers.autoscaling", f"{_API}.autoscaling.v2.HorizontalPodAutoscaler"
        ),
        _kind(
            "validatingwebhookconfigurations.admissionregistration.k8s.io",
            f"{_API}.admissionregistration.v1.ValidatingWebhookConfiguration",
            namespaced=False,
        ),
        _kind(
            "mutatingwebhookconfigurations.admissionregistration.k8s.io",
            f"{_API}.admissionregistration.v1.MutatingWebhookConfiguration",
            namespaced=False,
        ),
        _kind(
            "priorityclasses.scheduling.k8s.io",
            f"{_API}.scheduling.v1.PriorityClass",
            namespaced=False,
        ),
        _kind("roles.rbac.authorization.k8s.io", f"{_API}.rbac.v1.Role"),
        _kind("rolebindings.rbac.authorization.k8s.io", f"{_API}.rbac.v1.RoleBinding"),
        _kind(
            "clusterroles.rbac.authorization.k8s.io",
            f"{_API}.rbac.v1.ClusterRole",
            namespaced=False,
        ),
        _kind(
            "clusterrolebindings.rbac.authorization.k8s.io",
            f"{_API}.rbac.v1.ClusterRoleBinding",
            namespaced=False,
        ),
        _kind("leases.coordination.k8s.io", f"{_API}.coordination.v1.Lease"),
        _kind("events.events.k8s.io", f"{_API}.events.v1.Event"),
        _kind("poddisruptionbudgets.policy", f"{_API}.policy.v1.PodDisruptionBudget"),
        _kind("networkpolicies.networking.k8s.io", f"{_API}.networking.v1.NetworkPolicy"),
        _kind("ingresses.networking.k8s.io", f"{_API}.networking.v1.Ingress"),
        _kind(
            "customresourcedefinitions.apiextensions.k8s.io",
            "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinition",
            namespaced=False,
        ),
    )
}


@cache
def definitions() -> dict[str, Schema]:
    """All `$defs` of `_definitions.json`, keyed like `io.k8s.api.core.v1.Pod`."""
    root = resources.files("kubernetes_validate") / "kubernetes-json-schema" / DEFINITIONS_VERSION
    with (root / "_definitions.json").open("rb") as handle:
        loaded: dict[str, Any] = json.load(handle)
    defs: dict[str, Schema] = loaded["$defs"]
    return defs


@cache
def definitions_by_gvk() -> dict[tuple[str, str, str], str]:
    """`(group, version, kind)` -> definition name, from `x-kubernetes-group-version-kind`."""
    index: dict[tuple[str, str, str], str] = {}
    for name, schema in definitions().items():
        for gvk in schema.get("x-kubernetes-group-version-kind") or []:
            key = (str(gvk.get("group", "")), str(gvk.get("version", "")), str(gvk.get("kind")))
            # Several definitions may claim DeleteOptions/WatchEvent; keep the first, canonical one.
            index.setdefault(key, name)
    return index


def referenced(names: list[str]) -> set[str]:
    """The named definitions and everything they reference, transitively."""
    defs = definitions()
    seen: set[str] = set()
    pending = list(names)
    while pending:
        name = pending.pop()
        if name in seen or name not in defs:
            continue
        seen.add(name)
        pending.extend(_refs(defs[name]))
    return seen


def _refs(node: Any) -> list[str]:
    found: list[str] = []
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(REF_PREFIX):
            found.append(ref[len(REF_PREFIX) :])
        for value in node.values():
            found.extend(_refs(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_refs(value))
    return found


@dataclass(frozen=True)
class PatchMeta:
    """How strategic merge patch treats one field (from the `x-kubernetes-patch-*` extensions)."""

    strategy: str  # "merge", "replace", "retainKeys", "merge,retainKeys" or "" (default)
    merge_key: str | None
    list_map_keys: tuple[str, ...] = ()


def patch_merge_keys(resource_or_gvk: str | tuple[str, str, str]) -> dict[str, PatchMeta]:
    """Patch metadata per field path of a built-in kind: `{"spec.containers": PatchMeta(...)}`.

    Paths use `[]` for list items (`spec.containers[].ports`). Accepts a resource key
    (`"pods"`, `"deployments.apps"`) or `(group, version, kind)`; unknown kinds give `{}`.
    """
    if isinstance(resource_or_gvk, str):
        kind = BUILTIN_KINDS.get(resource_or_gvk)
        name = kind.definition if kind else None
    else:
        name = definitions_by_gvk().get(resource_or_gvk)
    return _patch_meta(name) if name else {}


@cache
def _patch_meta(name: str) -> dict[str, PatchMeta]:
    found: dict[str, PatchMeta] = {}
    _collect_patch_meta(definitions()[name], "", found, (name,))
    return found


def _collect_patch_meta(
    schema: Schema, path: str, found: dict[str, PatchMeta], seen: tuple[str, ...]
) -> None:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith(REF_PREFIX):
        target = ref[len(REF_PREFIX) :]
        if target in seen:  # recursive types (JSONSchemaProps) carry no patch metadata
            return
        schema, seen = definitions().get(target, {}), (*seen, target)
    for key, prop in (schema.get("properties") or {}).items():
        where = f"{path}.{key}" if path else key
        strategy = str(prop.get("x-kubernetes-patch-strategy", ""))
        merge_key = prop.get("x-kubernetes-patch-merge-key")
        map_keys = tuple(prop.get("x-kubernetes-list-map-keys") or ())
        if strategy or merge_key or map_keys:
            found[where] = PatchMeta(strategy, merge_key, map_keys)
        _collect_patch_meta(prop, where, found, seen)
    items = schema.get("items")
    if isinstance(items, dict):
        _collect_patch_meta(items, f"{path}[]", found, seen)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        _collect_patch_meta(extra, f"{path}.*", found, seen)
