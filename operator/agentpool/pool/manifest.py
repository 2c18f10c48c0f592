"""Agent pod manifests built from an AgentPool's pod template (pure).

Every agent pod carries:

- ``agentpool.dev/pool=<pool name>``: how the operator finds its agents again after a
  restart (a label selector, no local state);
- ``agentpool.dev/agent="true"``: marks the pod as an agent. The agent's identity is the
  pod name, which the API server only assigns at creation (``generateName``), so the label
  cannot carry an id without a second write; a constant value also keeps one selector for
  "all agents" across pools;
- ``agentpool.dev/template-hash=<hash>``: the hash of the template it was stamped from,
  so a changed template can roll idle agents (and be selected on);
- an ownerReference to the pool (controller, blockOwnerDeletion), so garbage collection
  removes agents with their pool and GitOps tools show them as owned.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from typing import Any

API_VERSION = "agentpool.dev/v1alpha1"
KIND = "AgentPool"

POOL_LABEL = "agentpool.dev/pool"
AGENT_LABEL = "agentpool.dev/agent"
TEMPLATE_HASH_LABEL = "agentpool.dev/template-hash"

# Ten hex digits (40 bits): collisions between two templates of one pool are negligible
# and the value stays a short, valid label value.
_HASH_LENGTH = 10


class ManifestError(ValueError):
    """The pool object cannot be turned into an agent pod (reported, never retried as is)."""


def template_hash(template: Mapping[str, Any]) -> str:
    """A short hash of the pod template, stable across key order and processes."""
    # Canonical JSON: sorted keys and fixed separators, so the same template read twice
    # (or from another replica of the operator) hashes the same.
    canonical = json.dumps(template, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:_HASH_LENGTH]


def agent_selector(pool_name: str) -> str:
    """The label selector that lists the agent pods of one pool."""
    return f"{POOL_LABEL}={pool_name},{AGENT_LABEL}=true"


def owner_reference(pool: Mapping[str, Any]) -> dict[str, Any]:
    """The controller ownerReference that ties an agent pod to its pool."""
    meta = _pool_metadata(pool)
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def is_agent_of(pod: Mapping[str, Any], pool: Mapping[str, Any]) -> bool:
    """True when the pod is an agent controlled by this very pool (same uid, not just name).

    A pool deleted and re-created under the same name has a new uid: pods of the old one
    match the label selector but are not this pool's agents.
    """
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    pool_meta = pool.get("metadata") or {}
    if labels.get(POOL_LABEL) != pool_meta.get("name") or labels.get(AGENT_LABEL) != "true":
        return False
    return any(
        ref.get("controller") is True
        and ref.get("kind") == KIND
        and ref.get("uid") == pool_meta.get("uid")
        for ref in meta.get("ownerReferences") or []
    )


def build_agent_pod(pool: Mapping[str, Any], *, template_hash: str | None = None) -> dict[str, Any]:
    """The pod to create for one new agent of ``pool``.

    ``template_hash`` defaults to the hash of the pool's ``spec.template``; pass it when the
    caller already computed it. The template is deep-copied: the pool object is never
    mutated.
    """
    meta = _pool_metadata(pool)
    spec = pool.get("spec")
    template = spec.get("template") if isinstance(spec, Mapping) else None
    if not isinstance(template, Mapping):
        raise ManifestError("spec.template is missing or not an object")
    pod_spec = template.get("spec")
    if not isinstance(pod_spec, Mapping):
        raise ManifestError("spec.template.spec is missing or not an object")
    containers = pod_spec.get("containers")
    if not isinstance(containers, list) or not containers:
        raise ManifestError("spec.template.spec.containers must list at least one container")

    digest = template_hash if template_hash is not None else _hash_of(template)
    body: dict[str, Any] = copy.deepcopy(dict(template))
    tmeta: dict[str, Any] = dict(body.get("metadata") or {})

    labels = dict(tmeta.get("labels") or {})
    # Ours win over the template's: the operator's view of its agents depends on them.
    labels.update({POOL_LABEL: meta["name"], AGENT_LABEL: "true", TEMPLATE_HASH_LABEL: digest})

    owners = [
        ref
        for ref in tmeta.get("ownerReferences") or []
        # Only one controller may own an object, and it must be the pool.
        if not ref.get("controller") and ref.get("uid") != meta["uid"]
    ]
    owners.append(owner_reference(pool))

    # A template name would make every create collide; agents are named by the server.
    tmeta.pop("name", None)
    for server_field in ("uid", "resourceVersion", "creationTimestamp", "generation"):
        tmeta.pop(server_field, None)
    tmeta.update(
        {
            "generateName": f"{meta['name']}-",
            "namespace": meta["namespace"],
            "labels": labels,
            "ownerReferences": owners,
        }
    )
    if tmeta.get("annotations") is not None:
        tmeta["annotations"] = dict(tmeta["annotations"])

    new_spec: dict[str, Any] = dict(body["spec"])
    # Never restart in place: a restarted container loses the step files kept in its
    # filesystem, and a restarted agent would look healthy while its build's state is
    # gone. With Never an exited container stays terminated, the classifier sees it and
    # the pool replaces the agent with a fresh pod.
    new_spec.setdefault("restartPolicy", "Never")

    body["apiVersion"] = "v1"
    body["kind"] = "Pod"
    body["metadata"] = tmeta
    body["spec"] = new_spec
    body.pop("status", None)
    return body


def _hash_of(template: Mapping[str, Any]) -> str:
    # The parameter of build_agent_pod shadows the public function's name.
    return template_hash(template)


def _pool_metadata(pool: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = pool.get("metadata")
    if not isinstance(meta, Mapping):
        raise ManifestError("pool has no metadata")
    missing = [key for key in ("name", "namespace", "uid") if not meta.get(key)]
    if missing:
        raise ManifestError(f"pool metadata lacks {', '.join(missing)}")
    return meta
