"""Request counters, peak connections and fault injection for the sandbox.

A connection is an in-flight HTTP request or an open WebSocket. Watches count in the overall
figures and are also listed on their own; per-pool figures leave them out, because a pool's API
quota covers its requests and exec sessions, not the operator's shared watch streams. A request
belongs to pool `<namespace>/<pool>` through the pod label `agentpool.dev/pool` (pods looked up
by name, or the body on create, or a `labelSelector` naming the pool) or a BuildStep's
`spec.pool`. Every figure is also broken down by client (the User-Agent). `/sandbox/...`
requests themselves are neither counted nor subject to faults.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import random
import re
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web
from multidict import MultiMapping

from agentpool_sandbox.errors import ApiError
from agentpool_sandbox.faults import Faults, FaultsError, error_status

if TYPE_CHECKING:
    from agentpool_sandbox.cluster import Sandbox

POOL_LABEL = "agentpool.dev/pool"
BUILDSTEPS = "buildsteps.agentpool.dev"
_NAMESPACE_SUBRESOURCES = ("status", "finalize")
_POOL_SELECTOR = re.compile(
    r"(?:^|,)\s*" + re.escape(POOL_LABEL) + r"\s*==?\s*(?P<pool>[A-Za-z0-9._-]+)\s*(?:,|$)"
)
_TRUE = ("1", "true", "True")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class RequestInfo:
    """What the API server's request-info resolver would make of a request."""

    verb: str
    resource: str | None
    namespace: str | None = None
    name: str | None = None
    watch: bool = False

    @property
    def base_resource(self) -> str | None:
        return self.resource.split("/", 1)[0] if self.resource else None


@dataclass(frozen=True)
class ResourcePath:
    """Where an API request points, as the API server's RequestInfoResolver splits it."""

    group: str  # "" for the core group
    segments: tuple[str, ...]  # after the version and any /watch/ prefix; never empty
    watch: bool  # a /watch/ path or a `watch` query


def resource_path(path: str, query: Mapping[str, str]) -> ResourcePath | None:
    """None for discovery and non-resource paths (`/api`, `/apis/g/v`, `/version`)."""
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 2 and parts[0] == "api":
        group, rest = "", parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, rest = parts[1], parts[3:]
    else:
        return None
    watch = query.get("watch", "") in _TRUE
    if rest and rest[0] == "watch":  # the deprecated /watch/ paths
        watch, rest = True, rest[1:]
    return ResourcePath(group, tuple(rest), watch) if rest else None


def classify(method: str, path: str, query: MultiMapping[str]) -> RequestInfo:
    """Verb and resource key (`pods`, `pods/exec`, `agentpools.agentpool.dev`) of a request."""
    located = resource_path(path, query)
    if located is None:
        return RequestInfo(verb=method.lower(), resource=None)
    group, rest, watch = located.group, list(located.segments), located.watch
    namespace = None
    if rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        if len(rest) > 2 and rest[2] not in _NAMESPACE_SUBRESOURCES:
            rest = rest[2:]
    plural = rest[0]
    name = rest[1] if len(rest) > 1 else None
    subresource = rest[2] if len(rest) > 2 else None
    if plural == "namespaces":
        namespace = None
    resource = plural if not group else f"{plural}.{group}"
    if subresource:
        resource = f"{resource}/{subresource}"
    verb = _verb(method, name, watch, subresource)
    return RequestInfo(verb, resource, namespace, name, watch and verb == "watch")


def _verb(method: str, name: str | None, watch: bool, subresource: str | None) -> str:
    if subresource in ("exec", "log"):
        return subresource
    if method == "GET":
        if watch:
            return "watch"
        return "get" if name else "list"
    return {
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete" if name else "deletecollection",
    }.get(method, method.lower())


def pool_from_selector(selector: str | None) -> str | None:
    if not selector:
        return None
    match = _POOL_SELECTOR.search(selector)
    return match["pool"] if match else None


def pool_of_object(resource: str, obj: Mapping[str, Any]) -> str | None:
    """The pool an object belongs to: pod label or BuildStep `spec.pool`."""
    # Any JSON can come in a request body: only well-shaped objects name a pool.
    if resource == BUILDSTEPS:
        pool = _member(obj, "spec", "pool")
    else:
        pool = _member(obj, "metadata", "labels", POOL_LABEL)
    return pool if isinstance(pool, str) and pool else None


def _member(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


@dataclass
class Gauge:
    current: int = 0
    peak: int = 0

    def up(self) -> None:
        self.current += 1
        self.peak = max(self.peak, self.current)

    def down(self) -> None:
        self.current -= 1

    def reset(self) -> None:
        self.peak = self.current

    def to_json(self) -> dict[str, int]:
        return {"current": self.current, "peak": self.peak}


@dataclass
class GaugeSet:
    """A gauge overall and per client."""

    total: Gauge = field(default_factory=Gauge)
    clients: dict[str, Gauge] = field(default_factory=dict)

    def up(self, client: str) -> None:
        self.total.up()
        self.clients.setdefault(client, Gauge()).up()

    def down(self, client: str) -> None:
        self.total.down()
        self.clients[client].down()

    def reset(self) -> None:
        self.total.reset()
        for gauge in self.clients.values():
            gauge.reset()

    def to_json(self) -> dict[str, Any]:
        return {
            **self.total.to_json(),
            "byClient": {c: g.to_json() for c, g in sorted(self.clients.items())},
        }


@dataclass
class RequestCounts:
    by_verb: Counter[str] = field(default_factory=Counter)
    by_resource: dict[str, Counter[str]] = field(default_factory=dict)

    def add(self, info: RequestInfo) -> None:
        self.by_verb[info.verb] += 1
        self.by_resource.setdefault(info.resource or "nonResource", Counter())[info.verb] += 1

    def to_json(self) -> dict[str, Any]:
        return {
            "total": sum(self.by_verb.values()),
            "byVerb": dict(sorted(self.by_verb.items())),
            "byResource": {r: dict(sorted(c.items())) for r, c in sorted(self.by_resource.items())},
        }


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Stats:
    """All counters; also the exec-session observer used by the exec channel."""

    def __init__(self) -> None:
        self.reset(clear_gauges=True)

    def reset(self, clear_gauges: bool = False) -> None:
        """Zero counters; peaks restart from what is open now (open things stay counted)."""
        self.since = _now()
        self.requests = RequestCounts()
        self.client_requests: dict[str, RequestCounts] = {}
        self.codes: Counter[int] = Counter()
        self.exec_opened_by_client: Counter[str] = Counter()
        self.exec_pool_opened: Counter[str] = Counter()
        if clear_gauges:
            self.connections = GaugeSet()
            self.non_watch = GaugeSet()
            self.watches = GaugeSet()
            self.pools: dict[str, GaugeSet] = {}
            self.exec_open = GaugeSet()
            self.exec_pools: dict[str, GaugeSet] = {}
            return
        for gauges in (self.connections, self.non_watch, self.watches, self.exec_open):
            gauges.reset()
        for gauge_set in (*self.pools.values(), *self.exec_pools.values()):
            gauge_set.reset()

    def count(self, info: RequestInfo, client: str) -> None:
        self.requests.add(info)
        self.client_requests.setdefault(client, RequestCounts()).add(info)

    def open(self, info: RequestInfo, client: str, pool: str | None) -> None:
        self.connections.up(client)
        (self.watches if info.watch else self.non_watch).up(client)
        if pool is not None and not info.watch:
            self.pools.setdefault(pool, GaugeSet()).up(client)

    def close(self, info: RequestInfo, client: str, pool: str | None) -> None:
        self.connections.down(client)
        (self.watches if info.watch else self.non_watch).down(client)
        if pool is not None and not info.watch:
            self.pools[pool].down(client)

    # SessionObserver (exec.py): the middleware stored client and pool on the request.
    def exec_opened(self, request: web.Request) -> None:
        client, pool = _client(request), request.get(POOL_KEY)
        self.exec_opened_by_client[client] += 1
        self.exec_open.up(client)
        if pool:
            self.exec_pool_opened[pool] += 1
            self.exec_pools.setdefault(pool, GaugeSet()).up(client)

    def exec_closed(self, request: web.Request) -> None:
        client, pool = _client(request), request.get(POOL_KEY)
        self.exec_open.down(client)
        if pool:
            self.exec_pools[pool].down(client)

    def to_json(self) -> dict[str, Any]:
        return {
            "since": self.since,
            "requests": {
                **self.requests.to_json(),
                "byClient": {c: r.to_json() for c, r in sorted(self.client_requests.items())},
            },
            "responses": {"byCode": {str(k): v for k, v in sorted(self.codes.items())}},
            "exec": {
                "opened": sum(self.exec_opened_by_client.values()),
                "open": self.exec_open.total.current,
                "peakOpen": self.exec_open.total.peak,
                "byClient": {
                    c: {
                        "opened": self.exec_opened_by_client[c],
                        "open": g.current,
                        "peakOpen": g.peak,
                    }
                    for c, g in sorted(self.exec_open.clients.items())
                },
                "byPool": {
                    p: {"opened": self.exec_pool_opened[p], **g.to_json()}
                    for p, g in sorted(self.exec_pools.items())
                },
            },
            "connections": {
                **self.connections.to_json(),
                "requests": self.non_watch.to_json(),
                "watches": self.watches.to_json(),
                "byPool": {p: g.to_json() for p, g in sorted(self.pools.items())},
            },
        }


@dataclass
class FaultState:
    faults: Faults = field(default_factory=Faults)
    rng: random.Random = field(default_factory=random.Random)

    def replace(self, faults: Faults) -> None:
        self.faults = faults
        self.rng = random.Random(faults.seed)


STATS_KEY = web.AppKey("sandbox_stats", Stats)
# The pool a request was attributed to, read again by the exec-session hooks.
POOL_KEY: web.RequestKey[str | None] = web.RequestKey("sandbox_pool")
FAULTS_KEY = web.AppKey("sandbox_faults", FaultState)


def exec_drop_after(app: web.Application) -> Callable[[], float | None]:
    """Read at each session start, so a PUT applies to sessions opened afterwards."""
    state = app.get(FAULTS_KEY)
    return lambda: state.faults.drop_exec_after_seconds if state is not None else None


def _client(request: web.Request) -> str:
    return request.headers.get("User-Agent") or "unknown"


async def _pool(request: web.Request, info: RequestInfo, store: Any) -> str | None:
    base = info.base_resource
    if base not in ("pods", BUILDSTEPS) or info.namespace is None:
        return None
    pool: str | None = None
    if info.name is not None:
        with contextlib.suppress(ApiError):
            pool = pool_of_object(base, store.peek(base, info.namespace, info.name))
    elif info.verb == "create" and request.can_read_body:
        with contextlib.suppress(ValueError, UnicodeDecodeError):
            body = json.loads(await request.read())
            if isinstance(body, Mapping):
                pool = pool_of_object(base, body)
    else:
        pool = pool_from_selector(request.query.get("labelSelector"))
    return f"{info.namespace}/{pool}" if pool else None


def _with_watch_timeout(request: web.Request, faults: Faults) -> web.Request:
    raw = request.query.get("timeoutSeconds")
    try:
        requested = int(raw) if raw else None
    except ValueError:
        return request
    timeout = faults.watch_timeout(requested)
    if timeout is None or timeout == requested:
        return request
    return request.clone(rel_url=request.rel_url.update_query(timeoutSeconds=str(timeout)))


def install(app: web.Application, sandbox: Sandbox) -> None:
    """Add the stats and faults middlewares and the /sandbox/v1/* routes."""
    stats = Stats()
    faults = FaultState()
    app[STATS_KEY] = stats
    app[FAULTS_KEY] = faults

    @web.middleware
    async def measure(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/sandbox/"):
            return await handler(request)
        info = classify(request.method, request.path, request.query)
        client = _client(request)
        pool = await _pool(request, info, sandbox.store)
        request[POOL_KEY] = pool
        stats.count(info, client)
        stats.open(info, client, pool)
        status = 500
        try:
            current = faults.faults
            delay = current.delay(info.verb, faults.rng)
            if delay:
                await asyncio.sleep(delay)
            rule = current.error(info.verb, info.resource, faults.rng)
            if rule is not None:
                headers = {"Retry-After": str(rule.retry_after_seconds)} if rule.code != 500 else {}
                status = rule.code
                return web.json_response(error_status(rule), status=rule.code, headers=headers)
            if info.watch:
                request = _with_watch_timeout(request, current)
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as error:
            status = error.status
            raise
        finally:
            stats.codes[status] += 1
            stats.close(info, client, pool)

    app.middlewares.append(measure)

    async def get_stats(_: web.Request) -> web.Response:
        return web.json_response(stats.to_json())

    async def reset_stats(_: web.Request) -> web.Response:
        stats.reset()
        return web.json_response(stats.to_json())

    async def get_faults(_: web.Request) -> web.Response:
        return web.json_response(faults.faults.to_json())

    async def put_faults(request: web.Request) -> web.Response:
        try:
            doc = json.loads(await request.read() or b"{}")
            faults.replace(Faults.from_json(doc))
        except (ValueError, FaultsError) as error:
            status = ApiError(400, "BadRequest", f"invalid faults: {error}").status()
            return web.json_response(status, status=400)
        return web.json_response(faults.faults.to_json())

    async def clear_faults(_: web.Request) -> web.Response:
        faults.replace(Faults())
        return web.json_response(faults.faults.to_json())

    app.router.add_get("/sandbox/v1/stats", get_stats)
    app.router.add_post("/sandbox/v1/stats/reset", reset_stats)
    app.router.add_delete("/sandbox/v1/stats", reset_stats)
    app.router.add_get("/sandbox/v1/faults", get_faults)
    app.router.add_put("/sandbox/v1/faults", put_faults)
    app.router.add_delete("/sandbox/v1/faults", clear_faults)
