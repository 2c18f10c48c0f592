"""kopf wiring, and nothing else: every handler forwards to the Runtime in `memo.runtime`.

Only event handlers watch our resources, no create/update handlers: those make kopf
store progress in annotations and add finalizers, i.e. write to our objects outside the
per-pool API quota. The controllers are level-based and need no progress storage.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import kopf

from agentpool.config import Config
from agentpool.kube.client import AGENTPOOLS, BUILDSTEPS, GROUP, VERSION, load_configuration
from agentpool.pool.manifest import POOL_LABEL

if TYPE_CHECKING:
    from agentpool.runtime import Runtime

__all__ = ["registry"]

registry = kopf.OperatorRegistry()


@kopf.on.startup(id="agentpool-startup", registry=registry)
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    config: Config = memo.config
    # The API server takes whole seconds: kopf sends the value as it is, and a float goes out
    # as `timeoutSeconds=300.0`, which a real API server refuses to parse.
    settings.watching.server_timeout = int(config.watch_server_timeout)
    settings.watching.client_timeout = config.watch_client_timeout
    settings.watching.connect_timeout = config.connect_timeout
    settings.networking.connect_timeout = config.connect_timeout
    # Our Events go through each pool's API quota (kube/events.py); kopf's own posting
    # would write Events outside it.
    settings.posting.enabled = False
    settings.peering.standalone = config.standalone
    if not config.standalone:
        settings.peering.name = config.peering_name
        # The oldest replica works: kopf pauses every replica that sees a peer of higher (or
        # equal) priority, and a replica paused after it started work would keep its pool
        # loops and step sessions running. Priority falling with start time means a newer
        # replica (rolling update, restarted standby) never preempts the one at work.
        settings.peering.priority = -time.time_ns() // 1000
    settings.peering.clusterwide = not config.namespaces
    # run_operator puts the Runtime's constructor in the memo: the runtime composes the
    # handlers, so they must not import it.
    memo.runtime = await memo.start_runtime(config)


@kopf.on.cleanup(id="agentpool-cleanup", registry=registry)
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    runtime: Runtime | None = memo.get("runtime")
    if runtime is not None:
        await runtime.close()


@kopf.on.login(id="agentpool-login", registry=registry)
async def login(memo: kopf.Memo, **_: Any) -> kopf.ConnectionInfo:
    config: Config = memo.config
    configuration = await load_configuration(config.kubeconfig)
    token: str | None = None
    scheme: str | None = None
    authorization = (configuration.api_key or {}).get("authorization") or (
        configuration.api_key or {}
    ).get("BearerToken")
    if authorization:
        scheme, _space, token = str(authorization).partition(" ")
        if not token:
            scheme, token = "Bearer", scheme
    return kopf.ConnectionInfo(
        server=str(configuration.host),
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        username=configuration.username or None,
        password=configuration.password or None,
        scheme=scheme,
        token=token,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
    )


@kopf.on.event(GROUP, VERSION, AGENTPOOLS, id="agentpool-pools", registry=registry)
async def pool_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    await memo.runtime.on_pool_event(event.get("type"), event["object"])


@kopf.on.event(
    "", "v1", "pods", labels={POOL_LABEL: kopf.PRESENT}, id="agentpool-pods", registry=registry
)
async def pod_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    await memo.runtime.on_pod_event(event.get("type"), event["object"])


@kopf.on.event(GROUP, VERSION, BUILDSTEPS, id="agentpool-steps", registry=registry)
async def step_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    await memo.runtime.on_step_event(event.get("type"), event["object"])
