"""`pods/attach` over WebSocket: the output of a container's main process as it is produced.

`kubectl attach` and `kubectl run -i` use it. The sandbox relays what the main process writes
after the moment of attaching (its stdout and stderr share one log, so both arrive on the
stdout channel, or on stderr when only stderr is asked for), until the process ends; then it
sends a `Success` status on channel 3, as the kubelet's streaming server does, and closes.
The main process reads no input (its stdin is /dev/null): stdin frames are accepted and
dropped, and resize frames are ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aiohttp import web

from agentpool_sandbox import exec as exec_channel
from agentpool_sandbox.containers import Container, ContainerRuntime
from agentpool_sandbox.errors import ApiError

_POLL_SECONDS = 0.05
_CHUNK = 64 * 1024
_TRUE = ("1", "true", "True")


def _require_running(pod: Mapping[str, Any], container: str) -> None:
    try:
        exec_channel.require_running(pod, container)
    except ApiError as error:
        raise ApiError(
            error.code, error.reason, error.message.replace("exec into", "attach to")
        ) from None


async def serve(
    request: web.Request, pod: Mapping[str, Any], runtime: ContainerRuntime
) -> web.StreamResponse:
    """Validate, upgrade, relay the main process's output; return when either side ends."""
    query = request.query
    container = exec_channel.select_container(pod, query.get("container") or None)
    stdout, stderr = query.get("stdout", "") in _TRUE, query.get("stderr", "") in _TRUE
    if not (stdout or stderr or query.get("stdin", "") in _TRUE):
        raise ApiError(400, "BadRequest", "you must specify at least 1 of stdin, stdout, stderr")
    _require_running(pod, container)
    if request.headers.get("Upgrade", "").lower() != "websocket":
        raise ApiError(400, "BadRequest", "Upgrade request required")
    protocol = exec_channel.choose_protocol(request.headers.get("Sec-WebSocket-Protocol"))
    metadata = pod.get("metadata") or {}
    record = runtime.container(str(metadata.get("namespace")), str(metadata["name"]), container)

    ws = web.WebSocketResponse(protocols=(protocol,))
    await ws.prepare(request)
    options = exec_channel.ExecOptions(
        command=(),
        container=container,
        stdin=False,
        stdout=stdout,
        stderr=stderr,
        tty=query.get("tty", "") in _TRUE,
    )
    session = exec_channel.ExecSession(ws, protocol, options)
    channel = exec_channel.STDOUT if stdout else exec_channel.STDERR
    relay = asyncio.create_task(_relay(session, record, channel if stdout or stderr else None))
    reader = asyncio.create_task(_drain_client(ws))
    try:
        await asyncio.wait({relay, reader}, return_when=asyncio.FIRST_COMPLETED)
        if relay.done() and not session.client_gone.is_set():
            await exec_channel.send_status(session, {"metadata": {}, "status": "Success"})
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.close()
    finally:
        session.client_gone.set()
        for task in (relay, reader):
            task.cancel()
        await asyncio.gather(relay, reader, return_exceptions=True)
    return ws


async def _drain_client(ws: web.WebSocketResponse) -> None:
    """Read (and drop) client frames until the client closes the socket."""
    async for _ in ws:
        pass


async def _relay(
    session: exec_channel.ExecSession, record: Container | None, channel: int | None
) -> None:
    """Send what the log gains from now on until the main process has ended."""
    if record is None or record.main is None:
        await session.client_gone.wait()  # no process: nothing will ever be written
        return
    path = record.log_path
    offset = _size(path)
    while True:
        finished = record.main is None or record.main.waiter.done()
        size = _size(path)
        while size > offset:
            with path.open("rb") as handle:
                handle.seek(offset)
                chunk = handle.read(min(_CHUNK, size - offset))
            offset += len(chunk)
            if channel is not None and chunk:
                await session.send(channel, chunk)
        if finished or session.client_gone.is_set():
            return
        await asyncio.sleep(_POLL_SECONDS)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
