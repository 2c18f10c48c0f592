"""The sandbox's object store: Kubernetes object semantics over in-memory dictionaries.

Stored objects are never mutated in place once committed (every write builds a new dict),
so lists, watch events and history share them safely without copies.
"""

from __future__ import annotations

import asyncio
import builtins
import itertools
import random
import re
import string
import uuid
from collections import deque
from collections.abc import AsyncGenerator, Callable
from datetime import UTC, datetime
from typing import Any

from agentpool_sandbox import errors, kinds, patching
from agentpool_sandbox.causes import json_type
from agentpool_sandbox.crds import SchemaCache, check_definition, established_status
from agentpool_sandbox.errors import ApiError, Cause, field_cause
from agentpool_sandbox.resources import CRD_KEY, NAMESPACES_KEY, Registry, ResourceType
from agentpool_sandbox.selectors import (
    FieldRequirement,
    Requirement,
    field_requirement_name,
    fields_match,
    labels_match,
    parse_field_selector,
    parse_label_selector,
)
from agentpool_sandbox.watch import Event, History, Subscription

Obj = dict[str, Any]

FOREGROUND = "foregroundDeletion"
ORPHAN = "orphan"
NAMESPACE_FINALIZER = "kubernetes"
CRD_FINALIZER = "customresourcecleanup.apiextensions.k8s.io"

_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # as Kubernetes: no vowels, no lookalikes
_PROTECTED_NAMESPACES = ("default", "kube-system", "kube-public")
_IMMUTABLE_META = (
    "uid",
    "creationTimestamp",
    "namespace",
    "name",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generateName",
    "selfLink",
)


def now_timestamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# Go's names for JSON types, as encoding/json words an unmarshalling error.
_GO_JSON_TYPES = {"integer": "number", "boolean": "bool"}


def check_propagation_policy(policy: Any) -> None:
    """422 like the API server's DeleteOptions validation for an unknown policy."""
    if policy in (None, "Background", "Foreground", "Orphan"):
        return
    raise errors.invalid(
        "meta.k8s.io",
        "DeleteOptions",
        "",
        [
            field_cause(
                "FieldValueNotSupported",
                "propagationPolicy",
                f'Unsupported value: "{policy}": supported values: "Foreground", "Background", '
                '"Orphan", "nil"',
            )
        ],
    )


def _zero_nulls(obj: Obj) -> None:
    """What decoding into Go structs makes of JSON nulls, where the sandbox relies on shapes.

    A null top-level field (`spec: null`) is unset, and a null list item becomes the item's
    zero value (`{}` here, so that validation reports its required fields: `env: [null]`).
    Nested null fields stay, as Go writes some back (`lastProbeTime: null`).
    """
    for key in [k for k, v in obj.items() if v is None]:
        del obj[key]
    _zero_list_items(obj)


def _zero_list_items(node: Any) -> None:
    if isinstance(node, dict):
        for value in node.values():
            _zero_list_items(value)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            if value is None:
                node[index] = {}
            else:
                _zero_list_items(value)


def _meta(obj: Obj) -> Obj:
    meta: Obj = obj.setdefault("metadata", {})
    return meta


def _spec_part(obj: Obj, with_status: bool) -> Obj:
    """Everything that counts as desired state for `generation`."""
    skip = ("metadata", "status") if with_status else ("metadata",)
    return {k: v for k, v in obj.items() if k not in skip}


class Store:
    """In-memory Kubernetes object store. All methods are synchronous; watches are queues."""

    def __init__(self, history: int = 2000) -> None:
        self.registry = Registry()
        self._history_size = history
        self._rv = itertools.count(1)
        self._current_rv = 0
        self._objects: dict[str, dict[str, dict[str, Obj]]] = {}
        self._histories: dict[str, History] = {}
        self._subscriptions: dict[str, list[Subscription]] = {}
        self._uids: dict[str, tuple[str, str, str]] = {}
        self._dependents: dict[str, set[tuple[str, str, str]]] = {}
        self._schemas = SchemaCache()
        self._gc_queue: deque[tuple[str, str, str, str]] = deque()
        self._gc_wakeup: asyncio.Event | None = None
        for name in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self.create(NAMESPACES_KEY, None, {"metadata": {"name": name}})

    # --- reading ------------------------------------------------------------------------

    @property
    def resource_version(self) -> str:
        return str(self._current_rv)

    def resource_type(self, key: str) -> ResourceType:
        rtype = self.registry.by_key(key)
        if rtype is None:
            raise ApiError(
                404, "NotFound", f"the server could not find the requested resource ({key})"
            )
        return rtype

    def _bucket(self, key: str, namespace: str) -> dict[str, Obj]:
        return self._objects.setdefault(key, {}).setdefault(namespace, {})

    def _find(self, rtype: ResourceType, namespace: str | None, name: str) -> Obj:
        obj = self._objects.get(rtype.key, {}).get(namespace or "", {}).get(name)
        if obj is None:
            raise errors.not_found(rtype.group, rtype.plural, name)
        return obj

    def peek(self, resource: str, namespace: str | None, name: str) -> Obj:
        """The stored object itself, shared: callers must not mutate it."""
        rtype = self.resource_type(resource)
        return self._find(rtype, namespace if rtype.namespaced else None, name)

    def get(self, resource: str, namespace: str | None, name: str) -> Obj:
        copied: Obj = patching.clone(self.peek(resource, namespace, name))
        return copied

    def field_allowed(self, rtype: ResourceType) -> Callable[[str], bool]:
        allowed = {"metadata.name", "metadata.namespace", *rtype.selectable_fields}
        return allowed.__contains__

    def select(
        self,
        resource: str,
        namespace: str | None = None,
        labels: list[Requirement] | None = None,
        fields: list[FieldRequirement] | None = None,
    ) -> tuple[list[Obj], str]:
        """Matching stored objects (shared, sorted by namespace/name) and the list version."""
        rtype = self.resource_type(resource)
        buckets = self._objects.get(rtype.key, {})
        if namespace and rtype.namespaced:
            scopes = [buckets.get(namespace, {})]
        else:
            scopes = [buckets[ns] for ns in sorted(buckets)]
        pinned = field_requirement_name(fields or [])
        items: list[Obj] = []
        for scope in scopes:
            if pinned is not None:
                candidates = [scope[pinned]] if pinned in scope else []
            else:
                candidates = [scope[n] for n in sorted(scope)]
            items.extend(
                o
                for o in candidates
                if labels_match(labels or [], o) and fields_match(fields or [], o)
            )
        return items, self.resource_version

    def list(
        self,
        resource: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[builtins.list[Obj], str]:
        rtype = self.resource_type(resource)
        labels = parse_label_selector(label_selector)
        fields = parse_field_selector(field_selector, self.field_allowed(rtype))
        items, rv = self.select(resource, namespace, labels, fields)
        return [patching.clone(o) for o in items], rv

    # --- committing ---------------------------------------------------------------------

    def _commit(self, rtype: ResourceType, kind: str, obj: Obj, previous: Obj | None) -> Obj:
        rv = next(self._rv)
        self._current_rv = rv
        meta = obj["metadata"]
        meta["resourceVersion"] = str(rv)
        namespace, name = meta.get("namespace", ""), meta["name"]
        bucket = self._bucket(rtype.key, namespace)
        if kind == "DELETED":
            bucket.pop(name, None)
            self._uids.pop(meta.get("uid", ""), None)
        else:
            bucket[name] = obj
            self._uids[meta["uid"]] = (rtype.key, namespace, name)
        self._index_owners(rtype.key, previous, obj if kind != "DELETED" else None)
        event = Event(rv, kind, obj, previous)
        history = self._histories.get(rtype.key)
        if history is None:
            history = self._histories[rtype.key] = History(self._history_size, 0)
        history.append(event)
        for subscription in self._subscriptions.get(rtype.key, ()):
            subscription.offer(event)
        return obj

    def _index_owners(self, key: str, old: Obj | None, new: Obj | None) -> None:
        for obj, add in ((old, False), (new, True)):
            if obj is None:
                continue
            meta = obj["metadata"]
            ident = (key, meta.get("namespace", ""), meta["name"])
            for ref in meta.get("ownerReferences") or ():
                uid = ref.get("uid", "") if isinstance(ref, dict) else ""
                if add:
                    self._dependents.setdefault(uid, set()).add(ident)
                elif uid in self._dependents:
                    self._dependents[uid].discard(ident)
                    if not self._dependents[uid]:
                        del self._dependents[uid]

    # --- creating -----------------------------------------------------------------------

    def _scope(self, rtype: ResourceType, namespace: str | None, obj: Obj) -> str:
        """The object's namespace: the URL's, which the body may repeat but not contradict."""
        meta = _meta(obj)
        if not rtype.namespaced:
            meta.pop("namespace", None)
            return ""
        body_ns = meta.get("namespace")
        if namespace and body_ns and body_ns != namespace:
            raise errors.bad_request(
                "the namespace of the provided object does not match the namespace sent on the "
                "request"
            )
        namespace = namespace or body_ns
        if not namespace:
            raise errors.bad_request("a namespace is required for namespaced resources")
        meta["namespace"] = namespace
        return namespace

    def _check_namespace(self, namespace: str, rtype: ResourceType, name: str) -> None:
        ns = self._objects.get(NAMESPACES_KEY, {}).get("", {}).get(namespace)
        if ns is None:
            raise errors.not_found("", "namespaces", namespace)
        if ns["metadata"].get("deletionTimestamp"):
            raise errors.forbidden(
                rtype.group,
                rtype.plural,
                name,
                f"unable to create new content in namespace {namespace} because it is being "
                "terminated",
            )

    def _name(self, rtype: ResourceType, meta: Obj) -> str:
        name = meta.get("name")
        if not name:
            prefix = meta.get("generateName")
            if not prefix:
                raise errors.invalid(
                    rtype.group,
                    rtype.kind,
                    "",
                    [
                        field_cause(
                            "FieldValueRequired",
                            "metadata.name",
                            "Required value: name or generateName is required",
                        )
                    ],
                )
            suffix = "".join(random.choices(_SUFFIX_ALPHABET, k=5))
            name = f"{prefix[:58]}{suffix}"
            meta["name"] = name
        pattern = _LABEL_RE if rtype.key == NAMESPACES_KEY else _NAME_RE
        limit = 63 if rtype.key == NAMESPACES_KEY else 253
        if not isinstance(name, str) or len(name) > limit or not pattern.match(name):
            raise errors.invalid(
                rtype.group,
                rtype.kind,
                str(name),
                [
                    field_cause(
                        "FieldValueInvalid",
                        "metadata.name",
                        f'Invalid value: "{name}": a lowercase RFC 1123 subdomain must consist of '
                        "lower case alphanumeric characters, '-' or '.', and must start and end "
                        "with an alphanumeric character",
                    )
                ],
            )
        return name

    def _storage_version(self, rtype: ResourceType, obj: Obj) -> None:
        """Keep the client's apiVersion when it is a served version of this resource."""
        api_version = obj.get("apiVersion", "")
        group, _, version = api_version.rpartition("/")
        if group != rtype.group or self.registry.lookup(group, version, rtype.plural) is None:
            obj["apiVersion"] = rtype.api_version
        obj["kind"] = rtype.kind

    def _check_strict_builtin(self, rtype: ResourceType, sent: Any) -> None:
        """`fieldValidation=Strict` for a built-in: unknown fields in the sent object are a 400.

        Only whole objects (create, replace, apply) are checked; patches are not.
        """
        if rtype.custom or not isinstance(sent, dict):
            return
        unknown = self._schemas.unknown_builtin(rtype.key, sent)
        if unknown:
            kind, version = rtype.kind, rtype.version
            raise ApiError(
                400,
                "BadRequest",
                f'{kind} in version "{version}" cannot be handled as a {kind}: strict decoding '
                "error: " + ", ".join(f'unknown field "{u}"' for u in unknown),
            )

    def _decode(
        self, rtype: ResourceType, obj: Any, *, whole: bool = False, patch: bool = False
    ) -> Obj:
        """The body as a typed decoder sees it: an object whose envelope has the right types.

        A real API server decodes into Go structs before defaulting or validating anything, so
        a wrong JSON type is a 400 BadRequest naming the field, never a 422 (nor a crash here).
        """
        if not isinstance(obj, dict):
            raise errors.bad_request(
                f'{rtype.kind} in version "{rtype.version}" cannot be handled as a {rtype.kind}: '
                f"json: cannot unmarshal {_GO_JSON_TYPES.get(json_type(obj), json_type(obj))} "
                f"into Go value of type {rtype.kind}"
            )
        found = self._schemas.decode_errors(rtype.key, obj, whole=whole)
        if found:
            raise errors.bad_request(
                f'{rtype.kind} in version "{rtype.version}" cannot be handled as a {rtype.kind}: '
                + "; ".join(found)
            )
        if patch:
            return obj  # in a merge patch, null means "remove": keep it
        if not rtype.custom and rtype.key != CRD_KEY:  # CRD schemas may hold nulls (enums)
            _zero_nulls(obj)
        for key in ("apiVersion", "kind", "metadata"):
            if key in obj and obj[key] is None:
                del obj[key]  # null decodes as unset
        return obj

    def _admit(self, rtype: ResourceType, obj: Obj, old: Obj | None, strict: bool = False) -> Obj:
        """Schema pruning, defaulting and validation; raises 422 with field causes."""
        causes: list[Cause]
        if rtype.custom:
            crd = self._objects.get(CRD_KEY, {}).get("", {}).get(rtype.key)
            if crd is None:
                return obj
            version = obj["apiVersion"].rpartition("/")[2]
            obj, causes = self._schemas.admit(rtype.key, crd, version, obj, old, strict=strict)
        elif rtype.key == CRD_KEY:
            # check_definition reads the spec's shape: wrong types stop at decoding first.
            self._decode(rtype, obj, whole=True)
            causes = check_definition(obj)
            if not causes:
                causes = self._schemas.validate_builtin(rtype.key, obj)
        else:
            causes = self._schemas.validate_builtin(rtype.key, obj)
        if any(c["reason"] == "FieldValueTypeInvalid" for c in causes) and not rtype.custom:
            self._decode(rtype, obj, whole=True)
        if causes:
            raise errors.invalid(rtype.group, rtype.kind, obj["metadata"].get("name", ""), causes)
        return obj

    def create(
        self,
        resource: str,
        namespace: str | None,
        obj: Obj,
        *,
        dry_run: bool = False,
        strict: bool = False,
    ) -> Obj:
        rtype = self.resource_type(resource)
        obj = self._decode(rtype, patching.clone(obj))
        if strict:
            self._check_strict_builtin(rtype, obj)
        namespace = self._scope(rtype, namespace, obj)
        meta = obj["metadata"]
        name = self._name(rtype, meta)
        if rtype.namespaced:
            self._check_namespace(namespace, rtype, name)
        if name in self._objects.get(rtype.key, {}).get(namespace, {}):
            raise errors.already_exists(rtype.group, rtype.plural, name)
        self._storage_version(rtype, obj)
        for field in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(field, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_timestamp()
        if rtype.generation:
            meta["generation"] = 1
        else:
            meta.pop("generation", None)
        if rtype.custom and rtype.status_subresource:
            obj.pop("status", None)
        # Validation before the kind's defaults: these fill only optional fields, and assume
        # the shapes that validation guarantees.
        obj = self._admit(rtype, obj, None, strict)
        kinds.prepare_create(rtype.key, obj)
        if rtype.key == CRD_KEY:
            obj["status"] = established_status(obj, meta["creationTimestamp"])
        if dry_run:
            return obj
        self._commit(rtype, "ADDED", obj, None)
        if rtype.key == CRD_KEY:
            self._schemas.forget(name)
            self.registry.register_crd(obj)
        elif rtype.key == NAMESPACES_KEY:
            self.create("serviceaccounts", name, {"metadata": {"name": "default"}})
        return obj

    # --- updating -----------------------------------------------------------------------

    def _prepare_update(
        self, rtype: ResourceType, old: Obj, candidate: Obj, subresource: str | None
    ) -> Obj:
        if subresource == "status":
            if not rtype.status_subresource:
                raise errors.not_found(
                    rtype.group, f"{rtype.plural}/status", old["metadata"]["name"]
                )
            new: Obj = patching.clone(old)
            if "status" in candidate:
                new["status"] = patching.clone(candidate["status"])
            else:
                new.pop("status", None)
            return new
        if subresource is not None:
            raise errors.not_found(
                rtype.group, f"{rtype.plural}/{subresource}", old["metadata"]["name"]
            )
        new = patching.clone(candidate)
        if not isinstance(new, dict):  # pragma: no cover - patches always yield objects
            raise errors.bad_request("the body must be a JSON object")
        self._storage_version(rtype, new)
        meta = _meta(new)
        old_meta = old["metadata"]
        if meta.get("name", old_meta["name"]) != old_meta["name"]:
            raise errors.bad_request(
                f"the name of the object ({meta.get('name')}) does not match the name on the URL "
                f"({old_meta['name']})"
            )
        for field in _IMMUTABLE_META:
            if field in old_meta:
                meta[field] = old_meta[field]
            else:
                meta.pop(field, None)
        if rtype.status_subresource:
            if "status" in old:
                new["status"] = old["status"]
            else:
                new.pop("status", None)
        if rtype.generation:
            generation = old_meta.get("generation", 1)
            changed = _spec_part(new, rtype.status_subresource) != _spec_part(
                old, rtype.status_subresource
            )
            meta["generation"] = generation + 1 if changed else generation
        else:
            meta.pop("generation", None)
        if old_meta.get("deletionTimestamp"):
            added = set(meta.get("finalizers") or ()) - set(old_meta.get("finalizers") or ())
            if added:
                raise errors.invalid(
                    rtype.group,
                    rtype.kind,
                    old_meta["name"],
                    [
                        field_cause(
                            "FieldValueForbidden",
                            "metadata.finalizers",
                            "Forbidden: no new finalizers can be added if the object is being "
                            "deleted",
                        )
                    ],
                )
        return new

    def _write(
        self, rtype: ResourceType, old: Obj, new: Obj, dry_run: bool, strict: bool = False
    ) -> Obj:
        new = self._admit(rtype, new, old, strict)
        meta = new["metadata"]
        meta["resourceVersion"] = old["metadata"]["resourceVersion"]
        if new == old or dry_run:
            # No-op writes neither bump the resourceVersion nor notify watchers.
            return new
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            # Removing the last finalizer deletes: watchers see DELETED with the final state.
            return self._remove(rtype, new, old)
        self._commit(rtype, "MODIFIED", new, old)
        if rtype.key == CRD_KEY:
            self._schemas.forget(meta["name"])
            if not meta.get("deletionTimestamp"):
                self.registry.register_crd(new)
        return new

    def _check_version(self, rtype: ResourceType, old: Obj, wanted: Any, required: bool) -> None:
        current = old["metadata"]["resourceVersion"]
        if wanted in (None, ""):
            if required:
                raise errors.invalid(
                    rtype.group,
                    rtype.kind,
                    old["metadata"]["name"],
                    [
                        field_cause(
                            "FieldValueInvalid",
                            "metadata.resourceVersion",
                            "Invalid value: 0x0: must be specified for an update",
                        )
                    ],
                )
            return
        if str(wanted) != current:
            raise errors.conflict(rtype.group, rtype.plural, old["metadata"]["name"])

    def replace(
        self,
        resource: str,
        namespace: str | None,
        name: str,
        obj: Obj,
        subresource: str | None = None,
        *,
        dry_run: bool = False,
        strict: bool = False,
    ) -> Obj:
        rtype = self.resource_type(resource)
        old = self._find(rtype, namespace if rtype.namespaced else None, name)
        obj = self._decode(rtype, obj)
        if strict:
            self._check_strict_builtin(rtype, obj)
        body_ns = (obj.get("metadata") or {}).get("namespace")
        if rtype.namespaced and body_ns and namespace and body_ns != namespace:
            raise errors.bad_request(
                "the namespace of the provided object does not match the namespace sent on the "
                "request"
            )
        wanted = (obj.get("metadata") or {}).get("resourceVersion")
        self._check_version(rtype, old, wanted, required=rtype.custom)
        new = self._prepare_update(rtype, old, obj, subresource)
        return self._write(rtype, old, new, dry_run, strict)

    def patch(  # noqa: PLR0917 - the positional shape is the shared sandbox contract
        self,
        resource: str,
        namespace: str | None,
        name: str,
        patch_type: str,
        body: Any,
        subresource: str | None = None,
        *,
        dry_run: bool = False,
        strict: bool = False,
    ) -> Obj:
        rtype = self.resource_type(resource)
        if patch_type not in patching.PATCH_TYPES:
            raise errors.unsupported_media_type(patch_type)
        if patch_type == patching.STRATEGIC and rtype.custom:
            raise errors.unsupported_media_type(patch_type)
        scope = namespace if rtype.namespaced else None
        try:
            old = self._find(rtype, scope, name)
        except ApiError as exc:
            if patch_type == patching.APPLY and exc.code == 404 and subresource is None:
                applied = dict(self._decode(rtype, body))
                if isinstance(applied, dict):
                    applied.setdefault("metadata", {})
                    applied["metadata"] = {**applied["metadata"], "name": name}
                return self.create(resource, namespace, applied, dry_run=dry_run, strict=strict)
            raise
        if patch_type == patching.JSON:
            candidate = self._decode(rtype, patching.json_patch(old, body))
            wanted = candidate.get("metadata", {}).get("resourceVersion")
        else:
            if not isinstance(body, dict):
                raise errors.bad_request("the patch must be a JSON object")
            self._decode(rtype, body, patch=True)
            wanted = (body.get("metadata") or {}).get("resourceVersion")
            if strict and patch_type == patching.APPLY:
                self._check_strict_builtin(rtype, body)
            if patch_type == patching.MERGE or (patch_type == patching.APPLY and rtype.custom):
                candidate = patching.merge_patch(old, body)
            else:
                schema = patching.schema_for(rtype.group, rtype.version, rtype.kind)
                candidate = patching.strategic_merge_patch(old, body, schema)
            # A copy: the patched object shares untouched parts with the stored one.
            candidate = self._decode(rtype, patching.clone(candidate))
        self._check_version(rtype, old, wanted, required=False)
        new = self._prepare_update(rtype, old, candidate, subresource)
        return self._write(rtype, old, new, dry_run, strict)

    def update_status(
        self, resource: str, namespace: str | None, name: str, mutate: Callable[[Obj], None]
    ) -> Obj:
        """In-process status write (the simulated kubelet's): no validation, always a new rv."""
        rtype = self.resource_type(resource)
        old = self._find(rtype, namespace if rtype.namespaced else None, name)
        new: Obj = patching.clone(old)
        mutate(new)
        return self._commit(rtype, "MODIFIED", new, old)

    # --- deleting -----------------------------------------------------------------------

    def delete(
        self,
        resource: str,
        namespace: str | None,
        name: str,
        propagation_policy: str | None = None,
        preconditions: Obj | None = None,
        *,
        dry_run: bool = False,
    ) -> Obj:
        rtype = self.resource_type(resource)
        old = self._find(rtype, namespace if rtype.namespaced else None, name)
        meta = old["metadata"]
        for field in ("uid", "resourceVersion"):
            wanted = (preconditions or {}).get(field)
            if wanted and wanted != meta.get(field):
                raise ApiError(
                    409,
                    "Conflict",
                    f"Precondition failed: {field} in precondition: {wanted}, {field} in object "
                    f"meta: {meta.get(field)}",
                )
        if rtype.key == NAMESPACES_KEY and name in _PROTECTED_NAMESPACES:
            raise errors.forbidden("", "namespaces", name, "this namespace may not be deleted")
        check_propagation_policy(propagation_policy)
        if dry_run:
            return old
        if meta.get("deletionTimestamp"):
            return old
        if propagation_policy == "Orphan":
            self._orphan_dependents(meta["uid"])
        finalizers = list(meta.get("finalizers") or ())
        if propagation_policy == "Foreground" and self._dependents.get(meta["uid"]):
            finalizers.append(FOREGROUND)
        if rtype.key == NAMESPACES_KEY:
            finalizers.append(NAMESPACE_FINALIZER)
        if rtype.key == CRD_KEY and self._objects.get(meta["name"]):
            finalizers.append(CRD_FINALIZER)
        if not finalizers:
            return self._remove(rtype, old)
        new: Obj = patching.clone(old)
        new_meta = new["metadata"]
        new_meta["deletionTimestamp"] = now_timestamp()
        new_meta["deletionGracePeriodSeconds"] = 0
        # Server-owned finalizers live where Kubernetes keeps them: in spec for namespaces.
        new_meta["finalizers"] = [
            f for f in dict.fromkeys(finalizers) if f not in (NAMESPACE_FINALIZER, CRD_FINALIZER)
        ] + ([CRD_FINALIZER] if CRD_FINALIZER in finalizers else [])
        if not new_meta["finalizers"]:
            del new_meta["finalizers"]
        if rtype.key == NAMESPACES_KEY:
            new["status"] = {"phase": "Terminating"}
        if rtype.generation:
            new_meta["generation"] = new_meta.get("generation", 1) + 1
        self._commit(rtype, "MODIFIED", new, old)
        if FOREGROUND in finalizers:
            self._enqueue_gc("foreground", rtype.key, new_meta.get("namespace", ""), name)
        if rtype.key == NAMESPACES_KEY:
            self._enqueue_gc("namespace", rtype.key, "", name)
        if rtype.key == CRD_KEY:
            self._enqueue_gc("crd", rtype.key, "", name)
        return new

    def _remove(self, rtype: ResourceType, obj: Obj, previous: Obj | None = None) -> Obj:
        gone: Obj = patching.clone(obj)
        self._commit(rtype, "DELETED", gone, previous or obj)
        meta = gone["metadata"]
        namespace = meta.get("namespace", "")
        if self._dependents.get(meta["uid"]):
            self._enqueue_gc("owner", rtype.key, namespace, meta["uid"])
        if namespace:
            ns = self._objects.get(NAMESPACES_KEY, {}).get("", {}).get(namespace)
            if ns is not None and ns["metadata"].get("deletionTimestamp"):
                self._enqueue_gc("namespace", NAMESPACES_KEY, "", namespace)
        if rtype.custom:
            crd = self._objects.get(CRD_KEY, {}).get("", {}).get(rtype.key)
            if crd is not None and crd["metadata"].get("deletionTimestamp"):
                self._enqueue_gc("crd", CRD_KEY, "", rtype.key)
        if rtype.key == CRD_KEY:
            self.registry.unregister(meta["name"])
            self._schemas.forget(meta["name"])
            self._objects.pop(meta["name"], None)
        if rtype.key == NAMESPACES_KEY:
            for key, buckets in self._objects.items():
                if key != NAMESPACES_KEY:
                    buckets.pop(meta["name"], None)
        for ref in meta.get("ownerReferences") or ():
            owner = self._uids.get(ref.get("uid", "")) if isinstance(ref, dict) else None
            if owner is not None and owner[0] != NAMESPACES_KEY:
                self._enqueue_gc("foreground", *owner)
        return gone

    # --- garbage collection -------------------------------------------------------------

    def _enqueue_gc(self, task: str, key: str, namespace: str, name: str) -> None:
        self._gc_queue.append((task, key, namespace, name))
        if self._gc_wakeup is not None:
            self._gc_wakeup.set()

    def _orphan_dependents(self, uid: str) -> None:
        for key, namespace, name in sorted(self._dependents.get(uid, ())):
            rtype = self.resource_type(key)
            old = self._objects[key][namespace][name]
            new: Obj = patching.clone(old)
            new["metadata"]["ownerReferences"] = [
                r for r in new["metadata"].get("ownerReferences") or () if r.get("uid") != uid
            ]
            if not new["metadata"]["ownerReferences"]:
                del new["metadata"]["ownerReferences"]
            self._commit(rtype, "MODIFIED", new, old)

    def _delete_quietly(
        self, key: str, namespace: str, name: str, policy: str | None = None
    ) -> None:
        try:
            self.delete(key, namespace or None, name, propagation_policy=policy)
        except ApiError as exc:
            if exc.code != 404:
                raise

    def _collect_owner(self, uid: str) -> None:
        """Delete the dependents of a removed owner, or drop the dangling reference when
        another owner is still alive, as the garbage collector controller does."""
        for key, namespace, name in sorted(self._dependents.get(uid, ())):
            obj = self._objects.get(key, {}).get(namespace, {}).get(name)
            if obj is None:
                continue
            refs = obj["metadata"].get("ownerReferences") or []
            alive = [r for r in refs if r.get("uid") != uid and r.get("uid") in self._uids]
            if alive:
                self._orphan_dependents_of(key, obj, uid)
            else:
                self._delete_quietly(key, namespace, name)

    def _orphan_dependents_of(self, key: str, obj: Obj, uid: str) -> None:
        rtype = self.resource_type(key)
        new: Obj = patching.clone(obj)
        new["metadata"]["ownerReferences"] = [
            r for r in new["metadata"]["ownerReferences"] if r.get("uid") != uid
        ]
        self._commit(rtype, "MODIFIED", new, obj)

    def _finish_when_empty(self, key: str, namespace: str, name: str, finalizer: str) -> None:
        """Drop a server-owned finalizer once nothing it waits for is left."""
        rtype = self.resource_type(key)
        obj = self._objects.get(key, {}).get(namespace, {}).get(name)
        if obj is None or not obj["metadata"].get("deletionTimestamp"):
            return
        meta = obj["metadata"]
        if finalizer in (FOREGROUND, CRD_FINALIZER) and finalizer not in (
            meta.get("finalizers") or ()
        ):
            return
        if finalizer == FOREGROUND:
            waiting = bool(self._dependents.get(meta["uid"]))
            if waiting:
                for dep_key, dep_ns, dep_name in sorted(self._dependents[meta["uid"]]):
                    self._delete_quietly(dep_key, dep_ns, dep_name, "Foreground")
                return
        elif finalizer == NAMESPACE_FINALIZER:
            remaining = False
            for res_key, buckets in list(self._objects.items()):
                if res_key == NAMESPACES_KEY or not self.registry.has_key(res_key):
                    continue
                for obj_name in sorted(buckets.get(name, {})):
                    remaining = True
                    self._delete_quietly(res_key, name, obj_name)
            if remaining and any(
                buckets.get(name) for k, buckets in self._objects.items() if k != NAMESPACES_KEY
            ):
                return
        elif finalizer == CRD_FINALIZER:
            instances = self._objects.get(name, {})
            for ns in sorted(instances):
                for obj_name in sorted(instances[ns]):
                    self._delete_quietly(name, ns, obj_name)
            if any(instances.values()):
                return
        current = self._objects.get(key, {}).get(namespace, {}).get(name)
        if current is None:
            return
        new: Obj = patching.clone(current)
        new["metadata"]["finalizers"] = [
            f for f in new["metadata"].get("finalizers") or () if f != finalizer
        ]
        if not new["metadata"]["finalizers"]:
            del new["metadata"]["finalizers"]
            if key == NAMESPACES_KEY:
                new.setdefault("spec", {})["finalizers"] = []
            self._commit(rtype, "MODIFIED", new, current)
            self._remove(rtype, new)
        else:
            self._commit(rtype, "MODIFIED", new, current)

    def collect_garbage(self) -> int:
        """Run every pending garbage-collection task (and those they cause); returns the count."""
        done = 0
        while self._gc_queue:
            task, key, namespace, name = self._gc_queue.popleft()
            done += 1
            if task == "owner":
                self._collect_owner(name)
            elif task == "foreground":
                self._finish_when_empty(key, namespace, name, FOREGROUND)
            elif task == "namespace":
                self._finish_when_empty(key, "", name, NAMESPACE_FINALIZER)
            elif task == "crd":
                self._finish_when_empty(key, "", name, CRD_FINALIZER)
        return done

    async def run_garbage_collector(self) -> None:
        """Collect garbage after the writes that cause it, asynchronously like the real GC."""
        self._gc_wakeup = asyncio.Event()
        try:
            while True:
                await self._gc_wakeup.wait()
                self._gc_wakeup.clear()
                # Let the request that caused the work answer first.
                await asyncio.sleep(0)
                self.collect_garbage()
        finally:
            self._gc_wakeup = None

    # --- watching -----------------------------------------------------------------------

    def watch(
        self,
        resource: str,
        namespace: str | None = None,
        since: str | None = None,
        labels: builtins.list[Requirement] | None = None,
        fields: builtins.list[FieldRequirement] | None = None,
    ) -> tuple[Subscription, builtins.list[tuple[str, Event]]]:
        """Open a subscription; also returns the events it must replay first.

        `since` None/""/"0" replays the current objects as ADDED; a resourceVersion replays
        later events from the history window, or raises 410 Gone when it is older than that.
        """
        rtype = self.resource_type(resource)
        scope = namespace if rtype.namespaced else None
        subscription = Subscription(scope, labels or [], fields or [])
        replay: builtins.list[tuple[str, Event]] = []
        if since in (None, "", "0"):
            items, _ = self.select(rtype.key, scope, labels, fields)
            replay = [
                ("ADDED", Event(int(o["metadata"]["resourceVersion"]), "ADDED", o)) for o in items
            ]
        else:
            try:
                start = int(str(since))
            except ValueError as exc:
                raise errors.bad_request(f"invalid resource version: {since}") from exc
            history = self._histories.get(rtype.key)
            floor = history.floor if history else 0
            if start < floor:
                raise errors.gone(f"too old resource version: {start} ({floor + 1})")
            for event in history.since(start) if history else []:
                kind = subscription.translate(event)
                if kind is not None:
                    replay.append((kind, event))
        self._subscriptions.setdefault(rtype.key, []).append(subscription)
        return subscription, replay

    def unwatch(self, resource: str, subscription: Subscription) -> None:
        subscription.closed = True
        subscriptions = self._subscriptions.get(resource, [])
        if subscription in subscriptions:
            subscriptions.remove(subscription)

    async def subscribe(
        self, resource: str, namespace: str | None = None, since: str | None = None
    ) -> AsyncGenerator[tuple[str, Obj]]:
        """In-process watch: (type, private copy of the object) forever."""
        subscription, replay = self.watch(resource, namespace, since)
        try:
            for kind, event in replay:
                yield kind, patching.clone(event.obj)
            while True:
                kind, event = await subscription.queue.get()
                yield kind, patching.clone(event.obj)
        finally:
            self.unwatch(resource, subscription)


def random_suffix() -> str:
    return "".join(random.choices(string.ascii_lowercase, k=5))
