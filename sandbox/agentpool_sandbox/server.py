"""The sandbox's HTTP API: Kubernetes REST paths, discovery, Tables and watch streams."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from aiohttp import web

from agentpool_sandbox import discovery, errors, patching, protobuf, scale, tables
from agentpool_sandbox.errors import ApiError
from agentpool_sandbox.openapi_protobuf import MEDIA_TYPE as OPENAPI_V2_PROTOBUF
from agentpool_sandbox.openapi_protobuf import (
    MEDIA_TYPE_DEPRECATED as OPENAPI_V2_PROTOBUF_DEPRECATED,
)
from agentpool_sandbox.resources import ResourceType
from agentpool_sandbox.selectors import (
    FieldRequirement,
    parse_field_selector,
    parse_label_selector,
)
from agentpool_sandbox.store import Store, check_propagation_policy
from agentpool_sandbox.watch import Event, Subscription

log = logging.getLogger(__name__)

Obj = dict[str, Any]
JSON_TYPE = "application/json"
VERSION = {
    "major": "1",
    "minor": "37",
    "gitVersion": "v1.37.0-agentpool-sandbox",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.25",
    "compiler": "gc",
    "platform": "linux/amd64",
}
_TRUE = ("1", "true", "True")
_NAMESPACE_SUBRESOURCES = ("status", "finalize")


def respond(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=json.dumps(body, separators=(",", ":")).encode(),
        status=status,
        content_type=JSON_TYPE,
    )


def error_response(exc: ApiError) -> web.Response:
    return respond(exc.status(), exc.code)


@dataclass(frozen=True)
class Target:
    """What a resource path names."""

    rtype: ResourceType
    namespace: str | None
    name: str | None
    subresource: str | None
    # The deprecated `/watch/` path prefix, still accepted by Kubernetes.
    watch: bool = False


def _accepts(request: web.Request, marker: str) -> bool:
    return marker in request.headers.get("Accept", "")


def _quality(params: list[str]) -> float:
    for param in params:
        key, _, value = param.partition("=")
        if key.strip().lower() == "q":
            try:
                return float(value)
            except ValueError:
                return 0.0
    return 1.0


def negotiate(accept: str, offers: Sequence[str]) -> str | None:
    """The offered media type an `Accept` header picks, as kube-openapi's handlers choose.

    Clauses are tried from the highest quality down (the more specific first among equals, as
    goautoneg sorts them), and the first offer a clause matches wins; `*` matches any type or
    subtype. No header means `*/*`; None means 406.
    """
    clauses: list[tuple[float, int, int, str, str]] = []
    for index, clause in enumerate((accept.strip() or "*/*").split(",")):
        media, *params = clause.split(";")
        kind, _, sub = media.strip().lower().partition("/")
        quality = _quality(params)
        if not kind or quality <= 0:
            continue
        specificity = (kind != "*") + (sub != "*")
        clauses.append((-quality, -specificity, index, kind, sub or "*"))
    for _, _, _, kind, sub in sorted(clauses):
        for offer in offers:
            offer_kind, _, offer_sub = offer.partition("/")
            if kind in ("*", offer_kind) and sub in ("*", offer_sub.lower()):
                return offer
    return None


def json_acceptable(accept: str) -> bool:
    """Whether an `Accept` header admits JSON (an OpenAPI v3 document is JSON only here)."""
    return negotiate(accept, (JSON_TYPE,)) is not None


def _not_acceptable(offers: Sequence[str]) -> web.Response:
    # Worded like the API server's own content negotiation failure.
    message = f"only the following media types are accepted: {', '.join(offers)}"
    return error_response(ApiError(406, "NotAcceptable", message))


_OPENAPI_V2_TYPES = (JSON_TYPE, OPENAPI_V2_PROTOBUF, OPENAPI_V2_PROTOBUF_DEPRECATED)


def _with_version(rtype: ResourceType, obj: Obj) -> Obj:
    """Objects read through another served version: same content, that apiVersion."""
    if obj.get("apiVersion") == rtype.api_version:
        return obj
    return {**obj, "apiVersion": rtype.api_version}


class ApiServer:
    """Routes Kubernetes API requests to a `Store`."""

    def __init__(self, store: Store, bookmark_interval: float = 60.0) -> None:
        self.store = store
        self.bookmark_interval = bookmark_interval
        self._openapi: Any = None

    # --- wiring -------------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        """Fixed paths: version, health, discovery and OpenAPI."""
        app.router.add_get("/version", self.version)
        for path in ("/healthz", "/readyz", "/livez"):
            app.router.add_get(path, self.health)
        app.router.add_get("/api", self.core_versions)
        app.router.add_get("/apis", self.groups)
        app.router.add_get("/openapi/v2", self.openapi_v2)
        app.router.add_get("/openapi/v3", self.openapi_v3_index)
        app.router.add_get("/openapi/v3/{path:.*}", self.openapi_v3)

    def add_resource_routes(self, app: web.Application) -> None:
        """The catch-all resource paths; added last so that exec/log routes match first."""
        app.router.add_route("*", "/api/{tail:.+}", self.resource)
        app.router.add_route("*", "/apis/{tail:.+}", self.resource)

    # --- fixed paths --------------------------------------------------------------------

    async def version(self, request: web.Request) -> web.Response:
        return respond(VERSION)

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok", content_type="text/plain")

    async def core_versions(self, request: web.Request) -> web.Response:
        # Plain discovery documents with a plain JSON content type make clients that asked
        # for aggregated discovery (apidiscovery.k8s.io/v2) fall back to per-group discovery.
        return respond(discovery.api_versions(f"{request.host}"))

    async def groups(self, request: web.Request) -> web.Response:
        return respond(discovery.api_group_list(self.store.registry))

    def _openapi_model(self) -> Any:
        if self._openapi is None:
            try:
                module = importlib.import_module("agentpool_sandbox.openapi")
            except ImportError as exc:
                raise ApiError(404, "NotFound", "the sandbox has no OpenAPI module") from exc
            self._openapi = module.OpenApi(self._crds)
        return self._openapi

    def _crds(self) -> list[Obj]:
        items, _ = self.store.select("customresourcedefinitions.apiextensions.k8s.io")
        return items

    async def openapi_v2(self, request: web.Request) -> web.Response:
        chosen = negotiate(request.headers.get("Accept", ""), _OPENAPI_V2_TYPES)
        if chosen is None:
            return _not_acceptable(_OPENAPI_V2_TYPES)
        try:
            model = self._openapi_model()
            if chosen == JSON_TYPE:
                response = respond(model.v2_document())
            else:
                # Both protobuf spellings are answered with the current one, as kube-openapi does.
                response = web.Response(body=model.v2_protobuf())
                response.headers["Content-Type"] = OPENAPI_V2_PROTOBUF
        except ApiError as exc:
            return error_response(exc)
        response.headers["Vary"] = "Accept"
        return response

    async def openapi_v3_index(self, request: web.Request) -> web.Response:
        if not json_acceptable(request.headers.get("Accept", "")):
            return _not_acceptable((JSON_TYPE,))
        try:
            return respond(self._openapi_model().v3_index())
        except ApiError as exc:
            return error_response(exc)

    async def openapi_v3(self, request: web.Request) -> web.Response:
        if not json_acceptable(request.headers.get("Accept", "")):
            return _not_acceptable((JSON_TYPE,))
        try:
            document = self._openapi_model().v3_document(request.match_info["path"])
        except ApiError as exc:
            return error_response(exc)
        if document is None:
            return error_response(ApiError(404, "NotFound", "the server could not find it"))
        return respond(document)

    # --- resource paths -----------------------------------------------------------------

    def _target(self, request: web.Request) -> Target | Obj:
        """Resolve a path to a resource target, or to a discovery document."""
        parts = [p for p in request.path.split("/") if p]
        registry = self.store.registry
        if parts[0] == "api":
            group, rest = "", parts[1:]
        else:
            group, rest = parts[1], parts[2:]
            if len(rest) == 0:
                found = discovery.api_group(registry, group)
                if found is None:
                    raise ApiError(
                        404, "NotFound", "the server could not find the requested resource"
                    )
                return found
        version, rest = rest[0], rest[1:]
        watch = bool(rest) and rest[0] == "watch"
        if watch:
            rest = rest[1:]
        if not rest:
            document = discovery.api_resource_list(registry, group, version)
            if document is None:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            return document
        namespace: str | None = None
        if (
            rest[0] == "namespaces"
            and len(rest) >= 3
            and not (len(rest) == 3 and rest[2] in _NAMESPACE_SUBRESOURCES)
        ):
            namespace, rest = rest[1], rest[2:]
        if len(rest) > 3:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        rtype = registry.lookup(group, version, rest[0])
        if rtype is None or (namespace is not None and not rtype.namespaced):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        name = rest[1] if len(rest) > 1 else None
        subresource = rest[2] if len(rest) > 2 else None
        return Target(rtype, namespace, name, subresource, watch)

    async def resource(self, request: web.Request) -> web.StreamResponse:
        try:
            target = self._target(request)
            if not isinstance(target, Target):
                if request.method != "GET":
                    raise errors.method_not_allowed()
                return respond(target)
            return await self._dispatch(request, target)
        except ApiError as exc:
            return error_response(exc)
        except (json.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError) as exc:
            return error_response(errors.bad_request(f"error decoding the request body: {exc}"))
        except (asyncio.CancelledError, ConnectionResetError):
            raise
        except Exception as exc:
            # Clients expect a Status body even when the sandbox itself is at fault.
            log.exception("sandbox API request failed: %s %s", request.method, request.path)
            return error_response(ApiError(500, "InternalError", f"sandbox error: {exc!r}"))

    async def _dispatch(self, request: web.Request, target: Target) -> web.StreamResponse:
        method, query = request.method, request.query
        if target.subresource == "scale" and target.rtype.scale is not None:
            return await self._scale(request, target, query.get("dryRun") == "All")
        if target.subresource not in (None, "status") or (
            target.subresource == "status" and not target.rtype.status_subresource
        ):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if target.subresource == "status" and method not in ("GET", "PUT", "PATCH"):
            raise errors.method_not_allowed()
        if target.rtype.review and (method, target.name) != ("POST", None):
            raise errors.method_not_allowed()
        dry_run = query.get("dryRun") == "All"
        handlers: dict[tuple[str, bool], Callable[[], Awaitable[web.StreamResponse]]] = {
            ("GET", False): lambda: self._list_or_watch(request, target),
            ("GET", True): lambda: self._get(request, target),
            ("POST", False): lambda: self._create(request, target, dry_run),
            ("PUT", True): lambda: self._replace(request, target, dry_run),
            ("PATCH", True): lambda: self._patch(request, target, dry_run),
            ("DELETE", True): lambda: self._delete(request, target, dry_run),
            ("DELETE", False): lambda: self._delete_collection(request, target),
        }
        if target.watch and method == "GET":
            return await self._list_or_watch(request, target)
        handler = handlers.get((method, target.name is not None))
        if handler is None:
            raise errors.method_not_allowed()
        return await handler()

    def _render_one(
        self, request: web.Request, target: Target, obj: Obj, status: int = 200
    ) -> web.Response:
        obj = _with_version(target.rtype, obj)
        if _accepts(request, "as=Table"):
            include = request.query.get("includeObject", "Metadata")
            return respond(
                tables.table(target.rtype, [obj], obj["metadata"]["resourceVersion"], include),
                status,
            )
        if _accepts(request, "as=PartialObjectMetadata"):
            return respond(_partial(obj), status)
        return respond(obj, status)

    async def _get(self, request: web.Request, target: Target) -> web.StreamResponse:
        assert target.name is not None
        obj = self.store.peek(target.rtype.key, target.namespace, target.name)
        return self._render_one(request, target, obj)

    def _selectors(self, request: web.Request, rtype: ResourceType) -> tuple[Any, Any]:
        labels = parse_label_selector(request.query.get("labelSelector"))
        fields = parse_field_selector(
            request.query.get("fieldSelector"), self.store.field_allowed(rtype)
        )
        return labels, fields

    async def _list_or_watch(self, request: web.Request, target: Target) -> web.StreamResponse:
        rtype = target.rtype
        labels, fields = self._selectors(request, rtype)
        if target.name is not None:
            fields = [*fields, FieldRequirement(("metadata", "name"), target.name, False)]
        if target.watch or request.query.get("watch") in _TRUE:
            return await self._watch(request, target, labels, fields)
        items, rv = self.store.select(rtype.key, target.namespace, labels, fields)
        items = [_with_version(rtype, o) for o in items]
        if _accepts(request, "as=Table"):
            include = request.query.get("includeObject", "Metadata")
            return respond(tables.table(rtype, items, rv, include))
        if _accepts(request, "as=PartialObjectMetadataList"):
            return respond(
                {
                    "kind": "PartialObjectMetadataList",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": {"resourceVersion": rv},
                    "items": [_partial(o) for o in items],
                }
            )
        return respond(
            {
                "kind": rtype.list_kind,
                "apiVersion": rtype.api_version,
                "metadata": {"resourceVersion": rv},
                "items": items,
            }
        )

    async def _body(self, request: web.Request) -> Any:
        raw = await request.read()
        if not raw:
            return None
        content_type = request.content_type
        if "yaml" in content_type:
            return yaml.safe_load(raw)
        if content_type == "application/vnd.kubernetes.protobuf":
            return protobuf.decode(raw)
        if "protobuf" in content_type or "cbor" in content_type:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"the sandbox API server accepts JSON and YAML request bodies only, not "
                f"{content_type}",
            )
        return json.loads(raw)

    async def _create(
        self, request: web.Request, target: Target, dry_run: bool
    ) -> web.StreamResponse:
        if target.rtype.review:
            # The answer does not depend on the question, so any encoding of it will do.
            question: Any = {}
            if "json" in request.content_type:
                question = await self._body(request)
            return respond(
                _review(target.rtype, question if isinstance(question, dict) else {}), 201
            )
        body = await self._body(request)
        if not isinstance(body, dict):
            raise errors.bad_request("the request body must be an object")
        created = self.store.create(
            target.rtype.key, target.namespace, body, dry_run=dry_run, strict=_strict(request)
        )
        return self._render_one(request, target, created, 201)

    async def _replace(
        self, request: web.Request, target: Target, dry_run: bool
    ) -> web.StreamResponse:
        assert target.name is not None
        body = await self._body(request)
        if not isinstance(body, dict):
            raise errors.bad_request("the request body must be an object")
        replaced = self.store.replace(
            target.rtype.key,
            target.namespace,
            target.name,
            body,
            target.subresource,
            dry_run=dry_run,
            strict=_strict(request),
        )
        return self._render_one(request, target, replaced)

    async def _patch(
        self, request: web.Request, target: Target, dry_run: bool
    ) -> web.StreamResponse:
        assert target.name is not None
        patch_type = request.content_type
        if patch_type not in patching.PATCH_TYPES:
            raise errors.unsupported_media_type(patch_type)
        body = await self._body(request)
        # Server-side apply creates missing objects, answering 201 as a create does.
        existed = True
        if patch_type == patching.APPLY:
            try:
                self.store.peek(target.rtype.key, target.namespace, target.name)
            except ApiError:
                existed = False
        patched = self.store.patch(
            target.rtype.key,
            target.namespace,
            target.name,
            patch_type,
            body,
            target.subresource,
            dry_run=dry_run,
            strict=_strict(request),
        )
        return self._render_one(request, target, patched, 200 if existed else 201)

    async def _scale(self, request: web.Request, target: Target, dry_run: bool) -> web.Response:
        """GET, PUT or PATCH `<resource>/<name>/scale` (autoscaling/v1 Scale)."""
        rtype, name = target.rtype, target.name
        if name is None or request.method not in ("GET", "PUT", "PATCH"):
            raise errors.method_not_allowed()
        current = scale.of(rtype, self.store.peek(rtype.key, target.namespace, name))
        if request.method == "GET":
            return respond(current)
        body = await self._body(request)
        if request.method == "PUT":
            if not isinstance(body, dict):
                raise errors.bad_request("the request body must be an object")
            wanted = (body.get("metadata") or {}).get("resourceVersion")
            if wanted and str(wanted) != current["metadata"].get("resourceVersion"):
                raise errors.conflict("autoscaling", "scale", name)
            written: Any = body
        else:
            if request.content_type not in patching.PATCH_TYPES:
                raise errors.unsupported_media_type(request.content_type)
            written = scale.patched(current, request.content_type, body)
        replicas = scale.replicas_of(name, written)
        updated = self.store.patch(
            rtype.key,
            target.namespace,
            name,
            patching.MERGE,
            scale.replicas_patch(rtype, replicas),
            dry_run=dry_run,
        )
        return respond(scale.of(rtype, updated))

    async def _delete_options(self, request: web.Request) -> Obj:
        options: Obj = {}
        with contextlib.suppress(json.JSONDecodeError, yaml.YAMLError):
            body = await self._body(request)
            if isinstance(body, dict):
                options = body
        if "propagationPolicy" in request.query:
            options["propagationPolicy"] = request.query["propagationPolicy"]
        if options.get("orphanDependents") is True and "propagationPolicy" not in options:
            options["propagationPolicy"] = "Orphan"
        return options

    async def _delete(
        self, request: web.Request, target: Target, dry_run: bool
    ) -> web.StreamResponse:
        assert target.name is not None
        options = await self._delete_options(request)
        deleted = self.store.delete(
            target.rtype.key,
            target.namespace,
            target.name,
            propagation_policy=options.get("propagationPolicy"),
            preconditions=options.get("preconditions"),
            dry_run=dry_run,
        )
        return self._render_one(request, target, deleted)

    async def _delete_collection(self, request: web.Request, target: Target) -> web.StreamResponse:
        rtype = target.rtype
        labels, fields = self._selectors(request, rtype)
        options = await self._delete_options(request)
        check_propagation_policy(options.get("propagationPolicy"))
        items, _ = self.store.select(rtype.key, target.namespace, labels, fields)
        deleted = []
        for obj in list(items):
            meta = obj["metadata"]
            with contextlib.suppress(ApiError):
                deleted.append(
                    self.store.delete(
                        rtype.key,
                        meta.get("namespace"),
                        meta["name"],
                        propagation_policy=options.get("propagationPolicy"),
                    )
                )
        return respond(
            {
                "kind": rtype.list_kind,
                "apiVersion": rtype.api_version,
                "metadata": {"resourceVersion": self.store.resource_version},
                "items": deleted,
            }
        )

    # --- watch --------------------------------------------------------------------------

    async def _watch(
        self, request: web.Request, target: Target, labels: Any, fields: Any
    ) -> web.StreamResponse:
        rtype, query = target.rtype, request.query
        as_table = _accepts(request, "as=Table")
        include = query.get("includeObject", "Metadata")
        initial_events = query.get("sendInitialEvents") in _TRUE
        since = query.get("resourceVersion")
        if initial_events:
            since = None
        bookmarks = query.get("allowWatchBookmarks") in _TRUE
        timeout = _seconds_parameter(query, "timeoutSeconds")
        response = web.StreamResponse(headers={"Content-Type": JSON_TYPE})
        response.enable_chunked_encoding()
        try:
            subscription, replay = self.store.watch(
                rtype.key, target.namespace, since, labels, fields
            )
        except ApiError as exc:
            if exc.code != 410:
                raise
            await response.prepare(request)
            await response.write(_encode("ERROR", exc.status()))
            await response.write_eof()
            return response
        await response.prepare(request)

        def frame(kind: str, event: Event) -> bytes:
            if as_table:
                obj = tables.table(rtype, [_with_version(rtype, event.obj)], str(event.rv), include)
                return _encode(kind, obj)
            if event.obj.get("apiVersion") != rtype.api_version:
                return _encode(kind, _with_version(rtype, event.obj))
            return event.encoded(kind)

        def bookmark(initial_end: bool = False) -> bytes:
            meta: Obj = {"resourceVersion": self.store.resource_version}
            if initial_end:
                meta["annotations"] = {"k8s.io/initial-events-end": "true"}
            return _encode(
                "BOOKMARK", {"kind": rtype.kind, "apiVersion": rtype.api_version, "metadata": meta}
            )

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout if timeout is not None else None
        try:
            for kind, event in replay:
                await response.write(frame(kind, event))
            if initial_events:
                await response.write(bookmark(initial_end=True))
            await self._stream(
                response, subscription, frame, bookmark if bookmarks else None, deadline
            )
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        finally:
            self.store.unwatch(rtype.key, subscription)
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response

    async def _stream(
        self,
        response: web.StreamResponse,
        subscription: Subscription,
        frame: Callable[[str, Event], bytes],
        bookmark: Callable[[], bytes] | None,
        deadline: float | None,
    ) -> None:
        loop = asyncio.get_running_loop()
        while True:
            wait = self.bookmark_interval if bookmark else None
            if deadline is not None:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return
                wait = remaining if wait is None else min(wait, remaining)
            try:
                kind, event = await asyncio.wait_for(subscription.queue.get(), wait)
            except TimeoutError:
                if bookmark is not None and (deadline is None or loop.time() < deadline):
                    await response.write(bookmark())
                continue
            chunks = [frame(kind, event)]
            while not subscription.queue.empty():
                kind, event = subscription.queue.get_nowait()
                chunks.append(frame(kind, event))
            await response.write(b"".join(chunks))


def _review(rtype: ResourceType, body: Obj) -> Obj:
    """The sandbox authorises everything, and everyone is the same static-token user."""
    if rtype.kind == "SelfSubjectReview":
        status: Obj = {
            "userInfo": {
                "username": "sandbox",
                "groups": ["system:masters", "system:authenticated"],
            }
        }
    elif rtype.kind == "SelfSubjectRulesReview":
        status = {
            "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
            "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
            "incomplete": False,
        }
    else:
        status = {"allowed": True, "reason": "the sandbox authorizes every request"}
    return {
        **body,
        "apiVersion": rtype.api_version,
        "kind": rtype.kind,
        "metadata": {"creationTimestamp": None, **(body.get("metadata") or {})},
        "status": status,
    }


def _seconds_parameter(query: Any, name: str) -> float | None:
    """An integer query parameter; anything else is a 400, as the API server's decoder says."""
    raw = query.get(name)
    if not raw:
        return None
    try:
        return float(int(raw))
    except ValueError:
        raise errors.bad_request(
            f'{name}: strconv.ParseInt: parsing "{raw}": invalid syntax'
        ) from None


def _strict(request: web.Request) -> bool:
    return request.query.get("fieldValidation") == "Strict"


def _encode(kind: str, obj: Obj) -> bytes:
    return json.dumps({"type": kind, "object": obj}, separators=(",", ":")).encode() + b"\n"


def _partial(obj: Obj) -> Obj:
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata", {}),
    }
