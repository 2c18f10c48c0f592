"""The server side of `pods/exec` over WebSocket (the Kubernetes channel protocol).

Every binary frame starts with a stream id: 0 stdin, 1 stdout, 2 stderr, 3 error/status, 4 resize;
`v5.channel.k8s.io` adds 255 = close (`[255, 0]` closes stdin). When the command exits the server
sends a `Status` on channel 3 and closes the socket. If the client goes away first the command
keeps running, its output drained and discarded, as a container runtime would leave it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import WSMessage, WSMsgType, web
from multidict import MultiMapping

from agentpool_sandbox.containers import ContainerRuntime, ExecProcess, PodGone
from agentpool_sandbox.errors import ApiError

V5 = "v5.channel.k8s.io"
V4 = "v4.channel.k8s.io"
V1 = "channel.k8s.io"
# The original protocol in text frames: an ASCII stream digit, then base64 data (browsers).
BASE64 = "base64.channel.k8s.io"
SUPPORTED_PROTOCOLS = (V5, V4, V1, BASE64)

STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255
_CHUNK = 64 * 1024
_MAX_CLIENT_FRAME = 32 * 1024 * 1024
_TRUE = ("1", "true", "True")


class SessionObserver(Protocol):
    """Stats hook: told when an exec WebSocket opens and closes."""

    def exec_opened(self, request: web.Request) -> None: ...

    def exec_closed(self, request: web.Request) -> None: ...


@dataclass(frozen=True)
class ExecOptions:
    command: tuple[str, ...]
    container: str | None
    stdin: bool
    stdout: bool
    stderr: bool
    tty: bool


def parse_options(query: MultiMapping[str]) -> ExecOptions:
    command = tuple(query.getall("command", []))
    if not command:
        raise ApiError(400, "BadRequest", "you must specify at least 1 command")
    return ExecOptions(
        command=command,
        container=query.get("container") or None,
        stdin=query.get("stdin", "") in _TRUE,
        stdout=query.get("stdout", "") in _TRUE,
        stderr=query.get("stderr", "") in _TRUE,
        tty=query.get("tty", "") in _TRUE,
    )


def choose_protocol(header: str | None) -> str:
    """The subprotocol to answer with; no header means the original `channel.k8s.io`."""
    if not header:
        return V1
    offered = [part.strip() for part in header.split(",") if part.strip()]
    for protocol in offered:
        if protocol in SUPPORTED_PROTOCOLS:
            return protocol
    raise ApiError(
        400,
        "BadRequest",
        f"unable to upgrade connection: none of the requested subprotocols {offered} are "
        f"supported; supported: {list(SUPPORTED_PROTOCOLS)}",
    )


def container_names(pod: Mapping[str, Any]) -> list[str]:
    return [str(c.get("name")) for c in (pod.get("spec") or {}).get("containers") or []]


def select_container(pod: Mapping[str, Any], requested: str | None) -> str:
    """The container to use, with the API server's messages when the choice is wrong."""
    name = str((pod.get("metadata") or {}).get("name", ""))
    names = container_names(pod)
    if requested is None:
        if len(names) == 1:
            return names[0]
        raise ApiError(
            400,
            "BadRequest",
            f"a container name must be specified for pod {name}, choose one of: "
            f"[{' '.join(names)}]",
        )
    if requested not in names:
        raise ApiError(400, "BadRequest", f"container {requested} is not valid for pod {name}")
    return requested


def require_running(pod: Mapping[str, Any], container: str) -> None:
    """Exec needs the container running (phase may still be Pending on a virtual kubelet)."""
    name = str((pod.get("metadata") or {}).get("name", ""))
    status = pod.get("status") or {}
    phase = status.get("phase")
    if phase in ("Succeeded", "Failed"):
        raise ApiError(
            400,
            "BadRequest",
            f"cannot exec into a container in a completed pod; current phase is {phase}",
        )
    if not (pod.get("spec") or {}).get("nodeName"):
        raise ApiError(400, "BadRequest", f"pod {name} does not have a host assigned")
    for entry in status.get("containerStatuses") or []:
        if entry.get("name") == container and "running" in (entry.get("state") or {}):
            return
    raise ApiError(
        400,
        "BadRequest",
        f'unable to upgrade connection: container not found ("{container}")',
    )


def exit_status(code: int, argv: Sequence[str]) -> dict[str, Any]:
    """The channel-3 `Status` reporting how the command ended."""
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    return {
        "metadata": {},
        "status": "Failure",
        "message": (
            "command terminated with non-zero exit code: error executing command "
            f"[{' '.join(argv)}], exit code {code}"
        ),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }


def start_failure(error: OSError, argv: Sequence[str]) -> dict[str, Any]:
    message = (
        "failed to exec in container: failed to start exec: OCI runtime exec failed: "
        f'exec failed: unable to start container process: exec: "{argv[0]}": {error.strerror}'
    )
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"Internal error occurred: {message}",
        "reason": "InternalError",
        "details": {"causes": [{"message": message}]},
        "code": 500,
    }


def exit_code(returncode: int) -> int:
    """Shell convention for signals (128 + n), as container runtimes report them."""
    return 128 - returncode if returncode < 0 else returncode


class ExecSession:
    """One exec WebSocket bound to one process."""

    def __init__(self, ws: web.WebSocketResponse, protocol: str, options: ExecOptions) -> None:
        self.ws = ws
        self.protocol = protocol
        self.options = options
        self.client_gone = asyncio.Event()

    async def send(self, channel: int, data: bytes) -> None:
        if self.client_gone.is_set():
            return
        try:
            if self.protocol == BASE64:
                await self.ws.send_str(str(channel) + base64.b64encode(data).decode("ascii"))
            else:
                await self.ws.send_bytes(bytes((channel,)) + data)
        except (ConnectionError, RuntimeError):
            self.client_gone.set()

    async def pump(self, reader: asyncio.StreamReader | None, channel: int) -> None:
        """Forward output as produced; awaiting the send is the back-pressure on the process."""
        if reader is None:
            return
        while True:
            try:
                chunk = await reader.read(_CHUNK)
            except OSError:
                # A terminal's master reports EIO once the command side is closed: that is EOF.
                return
            if not chunk:
                return
            await self.send(channel, chunk)

    async def feed(self, execution: ExecProcess) -> None:
        """Client frames to the process until the client closes or goes away."""
        stdin = execution.stdin
        try:
            async for message in self.ws:
                data = _frame(message, self.protocol)
                if not data:
                    continue
                channel = data[0]
                if channel == STDIN and stdin is not None and not stdin.is_closing():
                    stdin.write(data[1:])
                    with contextlib.suppress(ConnectionError):
                        await stdin.drain()
                elif channel == CLOSE and self.protocol == V5 and data[1:2] == bytes((STDIN,)):
                    execution.close_stdin()
                elif channel == RESIZE:
                    _resize(execution, data[1:])
        finally:
            execution.close_stdin()


def _frame(message: WSMessage, protocol: str) -> bytes:
    """A client frame as bytes with the stream id first, whatever the protocol's encoding."""
    if protocol == BASE64 and message.type == WSMsgType.TEXT and message.data:
        text: str = message.data
        try:
            return bytes((int(text[0]),)) + base64.b64decode(text[1:])
        except ValueError:
            return b""
    if message.type == WSMsgType.BINARY and protocol != BASE64:
        return bytes(message.data)
    if message.type == WSMsgType.TEXT and protocol != BASE64:
        # Like a real API server, take text frames too: the official Python client sends
        # stdin as text (chr(0) + data).
        return str(message.data).encode()
    return b""


def _resize(execution: ExecProcess, payload: bytes) -> None:
    """Resize frames are JSON `{"Width": w, "Height": h}`; malformed ones are ignored."""
    try:
        size = json.loads(payload)
        execution.resize(int(size["Width"]), int(size["Height"]))
    except (ValueError, TypeError, KeyError):
        return


async def _finish(execution: ExecProcess, pumps: list[asyncio.Task[None]]) -> int:
    try:
        await asyncio.gather(*pumps)
        return exit_code(await execution.process.wait())
    finally:
        execution.release()


async def serve(
    request: web.Request,
    pod: Mapping[str, Any],
    runtime: ContainerRuntime,
    observer: SessionObserver | None,
    drop_after: Callable[[], float | None],
) -> web.StreamResponse:
    """Validate, upgrade, run the command and relay its streams; return when the socket ends."""
    options = parse_options(request.query)
    container = select_container(pod, options.container)
    require_running(pod, container)
    if request.headers.get("Upgrade", "").lower() != "websocket":
        raise ApiError(400, "BadRequest", "Upgrade request required")
    protocol = choose_protocol(request.headers.get("Sec-WebSocket-Protocol"))

    ws = web.WebSocketResponse(protocols=(protocol,), max_msg_size=_MAX_CLIENT_FRAME)
    await ws.prepare(request)
    if observer is not None:
        observer.exec_opened(request)
    try:
        await _run(
            request,
            ws,
            protocol=protocol,
            options=options,
            pod=pod,
            container=container,
            runtime=runtime,
            drop_after=drop_after,
        )
    finally:
        if observer is not None:
            observer.exec_closed(request)
    return ws


async def _run(
    request: web.Request,
    ws: web.WebSocketResponse,
    *,
    protocol: str,
    options: ExecOptions,
    pod: Mapping[str, Any],
    container: str,
    runtime: ContainerRuntime,
    drop_after: Callable[[], float | None],
) -> None:
    session = ExecSession(ws, protocol, options)
    try:
        execution = await runtime.exec(
            pod,
            container,
            options.command,
            stdin=options.stdin,
            stdout=options.stdout,
            stderr=options.stderr,
            tty=options.tty,
        )
    except OSError as error:
        await send_status(session, start_failure(error, options.command))
        await ws.close()
        return
    except PodGone as error:
        await send_status(session, ApiError(404, "NotFound", str(error)).status())
        await ws.close()
        return

    pumps = [
        asyncio.create_task(session.pump(execution.stdout, STDOUT)),
        asyncio.create_task(session.pump(execution.stderr, STDERR)),
    ]
    completion = asyncio.create_task(_finish(execution, pumps))
    # The command outlives a dropped client; the runtime kills it with the pod.
    runtime.track(pod, completion)
    feeder = asyncio.create_task(session.feed(execution))
    dropper = _schedule_drop(request, session, drop_after())
    try:
        await asyncio.wait({completion, feeder}, return_when=asyncio.FIRST_COMPLETED)
        if completion.done() and not completion.cancelled() and not session.client_gone.is_set():
            await send_status(session, exit_status(completion.result(), options.command))
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.close()
        session.client_gone.set()
    finally:
        session.client_gone.set()
        feeder.cancel()
        if dropper is not None:
            dropper.cancel()


def _schedule_drop(
    request: web.Request, session: ExecSession, after: float | None
) -> asyncio.Task[None] | None:
    """Fault injection: cut the TCP connection without a close frame or status."""
    if after is None:
        return None
    transport = request.transport

    async def drop() -> None:
        await asyncio.sleep(after)
        session.client_gone.set()
        if transport is not None:
            transport.abort()

    return asyncio.create_task(drop())


async def send_status(session: ExecSession, status: Mapping[str, Any]) -> None:
    if session.protocol in (V1, BASE64):
        # The original protocol carries only the error text, nothing on success.
        if status.get("status") == "Success":
            return
        await session.send(ERROR, str(status.get("message", "")).encode())
        return
    await session.send(ERROR, json.dumps(status, separators=(",", ":")).encode())
