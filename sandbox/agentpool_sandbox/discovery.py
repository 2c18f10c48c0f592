"""Discovery documents (`/api`, `/apis`, APIResourceLists) built from the resource registry."""

from __future__ import annotations

from typing import Any

from agentpool_sandbox.resources import ALL_VERBS, Registry, ResourceType

Obj = dict[str, Any]

# Subresources served for every type that has them, with their verbs.
_STATUS_VERBS = ["get", "patch", "update"]
_POD_SUBRESOURCES = {
    "pods/attach": ("PodAttachOptions", ["create", "get"]),
    "pods/exec": ("PodExecOptions", ["create", "get"]),
    "pods/log": ("Pod", ["get"]),
}


def api_versions(server_address: str) -> Obj:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
        ],
    }


def _group(group: str, versions: list[str]) -> Obj:
    entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"name": group, "versions": entries, "preferredVersion": entries[0]}


def api_group(registry: Registry, group: str) -> Obj | None:
    versions = registry.group_versions().get(group)
    if not versions:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(group, versions)}


def api_group_list(registry: Registry) -> Obj:
    groups = [_group(g, vs) for g, vs in registry.group_versions().items() if g]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def _entry(rtype: ResourceType) -> Obj:
    entry: Obj = {
        "name": rtype.plural,
        "singularName": rtype.singular,
        "namespaced": rtype.namespaced,
        "kind": rtype.kind,
        "verbs": ["create"] if rtype.review else list(ALL_VERBS),
    }
    if rtype.short_names:
        entry["shortNames"] = list(rtype.short_names)
    if rtype.categories:
        entry["categories"] = list(rtype.categories)
    return entry


def _sub_entry(rtype: ResourceType, name: str, kind: str, verbs: list[str]) -> Obj:
    return {
        "name": name,
        "singularName": "",
        "namespaced": rtype.namespaced,
        "kind": kind,
        "verbs": verbs,
    }


def api_resource_list(registry: Registry, group: str, version: str) -> Obj | None:
    types = registry.in_group_version(group, version)
    if not types:
        return None
    resources: list[Obj] = []
    for rtype in sorted(types, key=lambda t: t.plural):
        resources.append(_entry(rtype))
        if rtype.status_subresource:
            resources.append(_sub_entry(rtype, f"{rtype.plural}/status", rtype.kind, _STATUS_VERBS))
        if rtype.scale is not None:
            scale = _sub_entry(rtype, f"{rtype.plural}/scale", "Scale", ["get", "patch", "update"])
            resources.append({**scale, "group": "autoscaling", "version": "v1"})
        if rtype.key == "pods":
            for name, (kind, verbs) in _POD_SUBRESOURCES.items():
                resources.append(_sub_entry(rtype, name, kind, verbs))
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": resources,
    }
