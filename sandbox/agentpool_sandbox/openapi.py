"""OpenAPI documents for the sandbox: `/openapi/v3` (index + per group-version) and `/openapi/v2`.

Built-in kinds come from the Kubernetes 1.37 definitions in the kubernetes-validate wheel,
rewritten into the shape a real API server publishes (`#/components/schemas/...` refs wrapped in
`allOf` when they carry a description, plain `type` instead of `[type, "null"]`, IntOrString as
`string` with format `int-or-string`). Custom resources are published the way
apiextensions-apiserver does: component `dev.agentpool.v1alpha1.AgentPool` (reversed group,
version, kind) with the standard `apiVersion`/`kind`/`metadata` properties, and paths whose
PATCH does not accept strategic merge patch (kubectl then falls back to JSON merge patch).

Every write operation lists the `fieldValidation` query parameter: that is how kubectl learns it
can leave validation to the server instead of validating on the client.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any

from agentpool_sandbox.definitions import BUILTIN_KINDS, REF_PREFIX, definitions, referenced
from agentpool_sandbox.openapi_protobuf import encode_document

Schema = dict[str, Any]

_META = "io.k8s.apimachinery.pkg.apis.meta.v1"
OBJECT_META = f"{_META}.ObjectMeta"
LIST_META = f"{_META}.ListMeta"
# Always published alongside the kinds: what the paths' requests and responses refer to.
_SUPPORT_DEFINITIONS = [
    f"{_META}.Status",
    f"{_META}.DeleteOptions",
    f"{_META}.Patch",
    f"{_META}.WatchEvent",
    OBJECT_META,
    LIST_META,
]

# Definitions the wheel spells as JSON Schema unions; the API server publishes plain strings.
_SCALAR_OVERRIDES: dict[str, Schema] = {
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString": {
        "description": "IntOrString holds either an int32 or a string.",
        "type": "string",
        "format": "int-or-string",
    },
    "io.k8s.apimachinery.pkg.api.resource.Quantity": {
        "description": "Quantity is a fixed-point number such as 100m, 1Gi or 2.",
        "type": "string",
    },
    f"{_META}.Patch": {
        "description": "Patch is provided to give a concrete name and type to the patch body.",
        "type": "object",
    },
}

_BEARER_TOKEN: Schema = {
    "type": "apiKey",
    "in": "header",
    "name": "authorization",
    "description": "Bearer Token authentication",
}

_BUILTIN_PATCH_TYPES = (
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
)
_CUSTOM_PATCH_TYPES = (
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/apply-patch+yaml",
)


@dataclass(frozen=True)
class ServedKind:
    """One resource as the OpenAPI paths describe it."""

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool
    component: str  # its schema's name in components/definitions
    list_component: str | None
    has_status: bool
    custom: bool

    @property
    def gvk(self) -> dict[str, str]:
        return {"group": self.group, "kind": self.kind, "version": self.version}

    @property
    def base(self) -> str:
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"


def group_version_path(group: str, version: str) -> str:
    """`api/v1` or `apis/<group>/<version>`: the key of a document in the v3 index."""
    return f"apis/{group}/{version}" if group else f"api/{version}"


def custom_component_name(group: str, version: str, kind: str) -> str:
    """`agentpool.dev`, `v1alpha1`, `AgentPool` -> `dev.agentpool.v1alpha1.AgentPool`."""
    return ".".join([*reversed(group.split(".")), version, kind])


class OpenApi:
    """Serves OpenAPI v3 and v2 for the built-in kinds plus whatever CRDs the store holds."""

    def __init__(self, crds_provider: Callable[[], list[dict[str, Any]]]) -> None:
        self._crds_provider = crds_provider
        # group-version path -> (fingerprint of its CRDs, document, digest)
        self._custom_cache: dict[str, tuple[str, dict[str, Any], str]] = {}
        # (fingerprint of the CRDs, the v2 document as protobuf)
        self._v2_protobuf: tuple[str, bytes] | None = None

    # -- v3 ------------------------------------------------------------------------------

    def v3_index(self) -> dict[str, Any]:
        """`{"paths": {"api/v1": {"serverRelativeURL": "/openapi/v3/api/v1?hash=..."}}}`."""
        digests = {path: _builtin_digest(path) for path in _builtin_group_versions()}
        digests.update({path: digest for path, (_, digest) in self._custom_documents().items()})
        return {
            "paths": {
                path: {"serverRelativeURL": f"/openapi/v3/{path}?hash={digests[path]}"}
                for path in sorted(digests)
            }
        }

    def v3_document(self, group_version_path: str) -> dict[str, Any] | None:
        """The document for `api/v1` or `apis/<group>/<version>`; None when nothing is served."""
        path = group_version_path.strip("/")
        custom = self._custom_documents()
        if path in custom:
            return custom[path][0]
        if path in _builtin_group_versions():
            return _builtin_document(path)
        return None

    def v3_hash(self, group_version_path: str) -> str | None:
        """The `hash` the index advertises for a document (kubectl caches documents by it)."""
        path = group_version_path.strip("/")
        custom = self._custom_documents()
        if path in custom:
            return custom[path][1]
        return _builtin_digest(path) if path in _builtin_group_versions() else None

    # -- v2 ------------------------------------------------------------------------------

    def v2_protobuf(self) -> bytes:
        """The v2 document as gnostic protobuf, re-encoded only when the CRDs change."""
        fingerprint = json.dumps(
            [(c.get("spec"), c.get("metadata", {}).get("name")) for c in self._crds()],
            sort_keys=True,
        )
        if self._v2_protobuf is None or self._v2_protobuf[0] != fingerprint:
            self._v2_protobuf = (fingerprint, encode_document(self.v2_document()))
        return self._v2_protobuf[1]

    def v2_document(self) -> dict[str, Any]:
        """Swagger 2.0 with every built-in definition and the CRD schemas."""
        # Shallow copies: the cached built-in parts are shared and never mutated.
        definitions_v2 = dict(_builtin_v2_definitions())
        paths = dict(_builtin_v2_paths())
        for crd in self._crds():
            for version in _served_versions(crd):
                served = _custom_kind(crd, version)
                schema = _crd_version_schema(crd, version)
                definitions_v2[served.component] = _custom_schema(served, schema, v2=True)
                definitions_v2[str(served.list_component)] = _list_schema(served, v2=True)
                paths.update(_paths(served, v2=True))
        return {
            "swagger": "2.0",
            "info": {"title": "Kubernetes", "version": "v1.37.0"},
            "paths": paths,
            "definitions": definitions_v2,
            "securityDefinitions": {"BearerToken": _BEARER_TOKEN},
            "security": [{"BearerToken": []}],
        }

    # -- custom resources ----------------------------------------------------------------

    def _crds(self) -> list[dict[str, Any]]:
        return [c for c in self._crds_provider() if (c.get("spec") or {}).get("versions")]

    def _custom_documents(self) -> dict[str, tuple[dict[str, Any], str]]:
        """Document and digest per CRD group-version, rebuilt only when its CRDs change."""
        by_path: dict[str, list[tuple[dict[str, Any], str]]] = {}
        for crd in self._crds():
            group = str(crd["spec"].get("group", ""))
            for version in _served_versions(crd):
                by_path.setdefault(group_version_path(group, version), []).append((crd, version))
        documents: dict[str, tuple[dict[str, Any], str]] = {}
        for path, served in by_path.items():
            fingerprint = json.dumps([(c.get("spec"), v) for c, v in served], sort_keys=True)
            cached = self._custom_cache.get(path)
            if cached is None or cached[0] != fingerprint:
                document = _custom_document(served)
                cached = (fingerprint, document, _digest(document))
                self._custom_cache[path] = cached
            documents[path] = (cached[1], cached[2])
        for stale in set(self._custom_cache) - set(by_path):
            del self._custom_cache[stale]
        return documents


def _digest(document: dict[str, Any]) -> str:
    # Real servers publish an upper-case SHA-512 of the document; kubectl caches by it.
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha512(canonical).hexdigest().upper()


# -- built-in documents ------------------------------------------------------------------


def _builtin_kinds() -> list[ServedKind]:
    defs = definitions()
    served = []
    for kind in BUILTIN_KINDS.values():
        list_name = kind.definition + "List"
        served.append(
            ServedKind(
                group=kind.group,
                version=kind.version,
                kind=kind.kind,
                plural=kind.resource.partition(".")[0],
                namespaced=kind.namespaced,
                component=kind.definition,
                list_component=list_name if list_name in defs else None,
                has_status="status" in (defs[kind.definition].get("properties") or {}),
                custom=False,
            )
        )
    return served


@cache
def _builtin_group_versions() -> frozenset[str]:
    return frozenset(group_version_path(k.group, k.version) for k in BUILTIN_KINDS.values())


@cache
def _builtin_document(path: str) -> dict[str, Any]:
    kinds = [k for k in _builtin_kinds() if group_version_path(k.group, k.version) == path]
    roots = [k.component for k in kinds] + [
        str(k.list_component) for k in kinds if k.list_component
    ]
    components = _converted(referenced(roots + _SUPPORT_DEFINITIONS), v2=False)
    paths: dict[str, Any] = {}
    for kind in kinds:
        paths.update(_paths(kind, v2=False))
    return _v3_document(paths, components)


@cache
def _builtin_digest(path: str) -> str:
    return _digest(_builtin_document(path))


@cache
def _builtin_v2_paths() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for kind in _builtin_kinds():
        paths.update(_paths(kind, v2=True))
    return paths


@cache
def _builtin_v2_definitions() -> dict[str, Schema]:
    return _converted(definitions(), v2=True)


def _v3_document(paths: dict[str, Any], components: dict[str, Schema]) -> dict[str, Any]:
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.37.0"},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"BearerToken": _BEARER_TOKEN},
        },
    }


def _converted(names: Iterable[str], *, v2: bool) -> dict[str, Schema]:
    defs = definitions()
    out: dict[str, Schema] = {}
    for name in sorted(names):
        if name in _SCALAR_OVERRIDES:
            out[name] = dict(_SCALAR_OVERRIDES[name])
            continue
        schema = _convert(defs[name], v2=v2)
        if "x-kubernetes-group-version-kind" in defs[name]:
            # The wheel pins apiVersion/kind with enums; real documents leave them free.
            for key in ("apiVersion", "kind"):
                prop = (schema.get("properties") or {}).get(key)
                if isinstance(prop, dict):
                    prop.pop("enum", None)
        out[name] = schema
    return out


def _ref(name: str, *, v2: bool) -> str:
    return ("#/definitions/" if v2 else "#/components/schemas/") + name


def _convert(node: Any, *, v2: bool) -> Any:
    """Rewrite one wheel schema node into OpenAPI (v3 or v2) as the API server publishes it."""
    if isinstance(node, list):
        return [_convert(item, v2=v2) for item in node]
    if not isinstance(node, dict):
        return node
    out: Schema = {}
    ref = node.get("$ref")
    for key, value in node.items():
        if key == "$ref":
            continue
        if key == "type" and isinstance(value, list):
            concrete = [t for t in value if t != "null"]
            out[key] = concrete[0] if concrete else "object"
        elif key in ("properties", "patternProperties") and isinstance(value, dict):
            out[key] = {name: _convert(sub, v2=v2) for name, sub in value.items()}
        else:
            out[key] = _convert(value, v2=v2)
    if isinstance(ref, str) and ref.startswith(REF_PREFIX):
        target = _ref(ref[len(REF_PREFIX) :], v2=v2)
        if not out:
            return {"$ref": target}
        if v2:
            return {"$ref": target, **out}
        return {"allOf": [{"$ref": target}], **out}
    return out


# -- custom resources --------------------------------------------------------------------


def _served_versions(crd: dict[str, Any]) -> list[str]:
    return [
        str(v["name"])
        for v in crd.get("spec", {}).get("versions") or []
        if v.get("served", True) and v.get("name")
    ]


def _crd_version_schema(crd: dict[str, Any], version: str) -> Schema:
    for served in crd["spec"]["versions"]:
        if served.get("name") == version:
            schema = (served.get("schema") or {}).get("openAPIV3Schema")
            if isinstance(schema, dict):
                return schema
    return {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


def _custom_kind(crd: dict[str, Any], version: str) -> ServedKind:
    spec = crd["spec"]
    names = spec.get("names") or {}
    group, kind = str(spec.get("group", "")), str(names.get("kind", ""))
    subresources: dict[str, Any] = {}
    for served in spec.get("versions") or []:
        if served.get("name") == version:
            subresources = served.get("subresources") or {}
    return ServedKind(
        group=group,
        version=version,
        kind=kind,
        plural=str(names.get("plural", "")),
        namespaced=spec.get("scope", "Namespaced") == "Namespaced",
        component=custom_component_name(group, version, kind),
        list_component=custom_component_name(
            group, version, str(names.get("listKind") or kind + "List")
        ),
        has_status="status" in subresources,
        custom=True,
    )


def _standard_description(prop: str) -> str:
    pod = definitions()["io.k8s.api.core.v1.Pod"]["properties"]
    return str(pod[prop].get("description", ""))


def _custom_schema(served: ServedKind, schema: Schema, *, v2: bool) -> Schema:
    published = _strip_for_v2(copy.deepcopy(schema)) if v2 else copy.deepcopy(schema)
    published = _with_object_meta(published, v2=v2)
    properties = published.setdefault("properties", {})
    properties["apiVersion"] = {
        "type": "string",
        "description": _standard_description("apiVersion"),
    }
    properties["kind"] = {"type": "string", "description": _standard_description("kind")}
    properties["metadata"] = _meta_property(OBJECT_META, _standard_description("metadata"), v2=v2)
    published["type"] = "object"
    published["x-kubernetes-group-version-kind"] = [served.gvk]
    return published


def _meta_property(name: str, description: str, *, v2: bool) -> Schema:
    if v2:
        return {"$ref": _ref(name, v2=True), "description": description}
    return {"allOf": [{"$ref": _ref(name, v2=False)}], "description": description}


def _with_object_meta(schema: Schema, *, v2: bool) -> Schema:
    """Embedded resources get the real ObjectMeta schema, as apiextensions publishes them."""
    if schema.get("x-kubernetes-embedded-resource"):
        properties = schema.setdefault("properties", {})
        properties["metadata"] = _meta_property(OBJECT_META, "", v2=v2)
        properties.setdefault("apiVersion", {"type": "string"})
        properties.setdefault("kind", {"type": "string"})
    for key in ("properties",):
        for name, sub in (schema.get(key) or {}).items():
            if isinstance(sub, dict):
                schema[key][name] = _with_object_meta(sub, v2=v2)
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            schema[key] = _with_object_meta(schema[key], v2=v2)
    return schema


_V2_DROPPED = ("nullable", "anyOf", "oneOf", "allOf", "not", "x-kubernetes-validations")


def _strip_for_v2(schema: Any) -> Any:
    """What apiextensions' `ToStructuralOpenAPIV2` makes of a CRD schema for Swagger 2.0.

    No unions or `nullable`; a nullable or unknown-fields-preserving node loses `properties`
    and `items` (a nullable one also its `type`), so kubectl's client-side validation cannot
    reject what the server keeps; an array left without `items` loses its `type`; nullable
    properties are no longer `required`.
    """
    if isinstance(schema, list):
        return [_strip_for_v2(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strip_for_v2(v) for k, v in schema.items() if k not in _V2_DROPPED}
    if schema.get("nullable") is True or schema.get("x-kubernetes-preserve-unknown-fields"):
        out.pop("properties", None)
        out.pop("items", None)
        if schema.get("nullable") is True:
            out.pop("type", None)
    if out.get("type") == "array" and "items" not in out:
        out.pop("type")
    properties = schema.get("properties")
    if isinstance(properties, dict) and isinstance(out.get("required"), list):
        nullable = {n for n, p in properties.items() if isinstance(p, dict) and p.get("nullable")}
        out["required"] = [r for r in out["required"] if r not in nullable]
        if not out["required"]:
            del out["required"]
    return out


def _list_schema(served: ServedKind, *, v2: bool) -> Schema:
    return {
        "description": f"{served.kind}List is a list of {served.kind}",
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": {"type": "string", "description": _standard_description("apiVersion")},
            "kind": {"type": "string", "description": _standard_description("kind")},
            "items": {
                "type": "array",
                "description": f"List of {served.plural}.",
                "items": {"$ref": _ref(served.component, v2=v2)},
            },
            "metadata": _meta_property(LIST_META, "Standard list metadata.", v2=v2),
        },
        "x-kubernetes-group-version-kind": [{**served.gvk, "kind": f"{served.kind}List"}],
    }


def _custom_document(served: list[tuple[dict[str, Any], str]]) -> dict[str, Any]:
    components = _converted(referenced(_SUPPORT_DEFINITIONS), v2=False)
    paths: dict[str, Any] = {}
    for crd, version in served:
        kind = _custom_kind(crd, version)
        components[kind.component] = _custom_schema(
            kind, _crd_version_schema(crd, version), v2=False
        )
        components[str(kind.list_component)] = _list_schema(kind, v2=False)
        paths.update(_paths(kind, v2=False))
    return _v3_document(paths, components)


# -- paths -------------------------------------------------------------------------------


def _query(name: str, description: str, kind: str = "string") -> Schema:
    return {
        "name": name,
        "in": "query",
        "description": description,
        "schema": {"type": kind, "uniqueItems": True},
    }


_WRITE_PARAMETERS = [
    _query("dryRun", "When present, modifications are not persisted."),
    _query("fieldManager", "Name of the actor making the change."),
    _query(
        "fieldValidation",
        "Ignore, Warn or Strict: how to treat unknown or duplicate fields in the request.",
    ),
]
_LIST_PARAMETERS = [
    _query("labelSelector", "Restrict the list of returned objects by their labels."),
    _query("fieldSelector", "Restrict the list of returned objects by their fields."),
    _query("limit", "Maximum number of responses to return.", "integer"),
    _query("continue", "Continue token of a previous, paginated list."),
    _query("resourceVersion", "Resource version to list or watch from."),
    _query("resourceVersionMatch", "How resourceVersion is applied to list calls."),
    _query("timeoutSeconds", "Timeout for the list/watch call.", "integer"),
    _query("watch", "Watch for changes and return them as a stream.", "boolean"),
    _query("allowWatchBookmarks", "Request watch events with type BOOKMARK.", "boolean"),
    _query("sendInitialEvents", "Begin the watch stream with synthetic ADDED events.", "boolean"),
]
_PATCH_PARAMETERS = [*_WRITE_PARAMETERS, _query("force", "Force apply requests.", "boolean")]
_DELETE_PARAMETERS = [
    _query("dryRun", "When present, modifications are not persisted."),
    _query("gracePeriodSeconds", "Seconds before the object should be deleted.", "integer"),
    _query("propagationPolicy", "Orphan, Background or Foreground garbage collection."),
]


def _path_parameter(name: str, description: str) -> Schema:
    return {
        "name": name,
        "in": "path",
        "description": description,
        "required": True,
        "schema": {"type": "string", "uniqueItems": True},
    }


def _operation_id(verb: str, kind: ServedKind, suffix: str = "") -> str:
    group = kind.group.removesuffix(".k8s.io") if kind.group else "core"
    words = [p for chunk in group.split(".") for p in chunk.split("-")]
    scope = "Namespaced" if kind.namespaced and verb != "listForAllNamespaces" else ""
    verb = "list" if verb == "listForAllNamespaces" else verb
    tail = "ForAllNamespaces" if scope == "" and kind.namespaced else ""
    return (
        verb
        + "".join(w.capitalize() for w in words)
        + kind.version.capitalize()
        + scope
        + kind.kind
        + suffix
        + tail
    )


def _body(schema_ref: str, types: Iterable[str], *, v2: bool) -> Any:
    if v2:
        return [{"name": "body", "in": "body", "required": True, "schema": {"$ref": schema_ref}}]
    return {
        "content": {t: {"schema": {"$ref": schema_ref}} for t in types},
        "required": True,
    }


def _operation(
    kind: ServedKind,
    action: str,
    operation_id: str,
    response: str,
    parameters: list[Schema],
    *,
    v2: bool,
    body: tuple[str, Iterable[str]] | None = None,
    codes: Iterable[str] = ("200",),
) -> Schema:
    response_ref = _ref(response, v2=v2)
    produced = ("application/json", "application/yaml")
    responses: dict[str, Any] = {}
    for code in codes:
        if v2:
            responses[code] = {"description": "OK", "schema": {"$ref": response_ref}}
        else:
            responses[code] = {
                "description": "OK",
                "content": {t: {"schema": {"$ref": response_ref}} for t in produced},
            }
    operation: Schema = {
        "tags": [kind.group.replace(".", "") + "_" + kind.version if kind.group else "core_v1"],
        "description": f"{action} {kind.kind}",
        "operationId": operation_id,
        "responses": responses,
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": kind.gvk,
    }
    if v2:
        query = [
            {k: v for k, v in p.items() if k != "schema"} | {"type": p["schema"]["type"]}
            for p in parameters
        ]
        operation["parameters"] = query
        operation["produces"] = list(produced)
        operation["schemes"] = ["https"]
        if body is not None:
            operation["parameters"] = query + _body(_ref(body[0], v2=True), body[1], v2=True)
            operation["consumes"] = list(body[1])
    else:
        operation["parameters"] = parameters
        if body is not None:
            operation["requestBody"] = _body(_ref(body[0], v2=False), body[1], v2=False)
    return operation


_JSON_TYPES = ("application/json", "application/yaml")


def _object_operations(kind: ServedKind, suffix: str, *, v2: bool) -> dict[str, Schema]:
    """Read, replace and patch of one object (`suffix` ""), or of its `Status` subresource."""
    patch_types = _CUSTOM_PATCH_TYPES if kind.custom else _BUILTIN_PATCH_TYPES
    writes: dict[str, tuple[str, list[Schema], tuple[str, Iterable[str]]]] = {
        "put": ("replace", _WRITE_PARAMETERS, (kind.component, _JSON_TYPES)),
        "patch": ("patch", _PATCH_PARAMETERS, (f"{_META}.Patch", patch_types)),
    }
    read_id = _operation_id("read", kind, suffix)
    operations = {"get": _operation(kind, "get", read_id, kind.component, [], v2=v2)}
    for action, (verb, parameters, body) in writes.items():
        operations[action] = _operation(
            kind,
            action,
            _operation_id(verb, kind, suffix),
            kind.component,
            parameters,
            v2=v2,
            body=body,
            codes=("200", "201"),
        )
    return operations


def _paths(kind: ServedKind, *, v2: bool) -> dict[str, Any]:
    prefix = f"{kind.base}/namespaces/{{namespace}}" if kind.namespaced else kind.base
    collection, item = f"{prefix}/{kind.plural}", f"{prefix}/{kind.plural}/{{name}}"
    scope_params = (
        [_path_parameter("namespace", "object name and auth scope")] if kind.namespaced else []
    )
    item_params = [_path_parameter("name", f"name of the {kind.kind}"), *scope_params]
    json_types = _JSON_TYPES
    status = f"{_META}.Status"

    paths: dict[str, Any] = {}
    collection_ops: dict[str, Any] = {
        "parameters": scope_params,
        "post": _operation(
            kind,
            "post",
            _operation_id("create", kind),
            kind.component,
            _WRITE_PARAMETERS,
            v2=v2,
            body=(kind.component, json_types),
            codes=("200", "201", "202"),
        ),
        "delete": _operation(
            kind,
            "deletecollection",
            _operation_id("deleteCollection", kind),
            status,
            _DELETE_PARAMETERS + _LIST_PARAMETERS,
            v2=v2,
            body=(f"{_META}.DeleteOptions", json_types),
        ),
    }
    if kind.list_component:
        collection_ops["get"] = _operation(
            kind, "list", _operation_id("list", kind), kind.list_component, _LIST_PARAMETERS, v2=v2
        )
    paths[collection] = collection_ops
    paths[item] = {
        "parameters": item_params,
        **_object_operations(kind, "", v2=v2),
        "delete": _operation(
            kind,
            "delete",
            _operation_id("delete", kind),
            status,
            _DELETE_PARAMETERS,
            v2=v2,
            body=(f"{_META}.DeleteOptions", json_types),
            codes=("200", "202"),
        ),
    }
    if kind.namespaced and kind.list_component:
        paths[f"{kind.base}/{kind.plural}"] = {
            "get": _operation(
                kind,
                "list",
                _operation_id("listForAllNamespaces", kind),
                kind.list_component,
                _LIST_PARAMETERS,
                v2=v2,
            )
        }
    if kind.has_status:
        paths[f"{item}/status"] = {
            "parameters": item_params,
            **_object_operations(kind, "Status", v2=v2),
        }
    if v2:
        for path_item in paths.values():
            shared = path_item.pop("parameters", [])
            if shared:
                path_item["parameters"] = [
                    {k: v for k, v in p.items() if k != "schema"} | {"type": "string"}
                    for p in shared
                ]
    return paths
