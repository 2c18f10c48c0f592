"""The operator's HTTP telemetry: Prometheus `/metrics` and `/debug/connections`.

`/debug/connections` is the seed's monitoring script as an endpoint: per pool, the quota
limit, each running API connection (kind, target, age) and each queued one (what waits,
for how long), plus agents by state and steps queued/running.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

__all__ = ["Telemetry"]


class Telemetry:
    """Serves the endpoints on `host:port`; port 0 picks a free port (see `port`)."""

    def __init__(
        self,
        port: int,
        *,
        registry: CollectorRegistry,
        connections: Callable[[], dict[str, Any]],
        host: str = "0.0.0.0",
    ) -> None:
        self.host = host
        self.port = port
        self._registry = registry
        self._connections = connections
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/debug/connections", self._debug_connections)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _debug_connections(self, request: web.Request) -> web.Response:
        return web.Response(
            text=json.dumps(self._connections(), indent=2, default=str) + "\n",
            content_type="application/json",
        )
