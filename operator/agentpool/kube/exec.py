"""Exec into a container over WebSocket, speaking the Kubernetes channel protocol.

Built on kubernetes_asyncio's ``WsApiClient`` in raw mode (``_preload_content=False``):
its preload mode merges stdout with stderr and drops the exit code, and it only
offers ``v4.channel.k8s.io``. :class:`ExecApiClient` offers ``v5.channel.k8s.io``
then ``v4.channel.k8s.io`` and keeps the API server's explanation when the upgrade
is refused.

Channels: 0 stdin, 1 stdout, 2 stderr, 3 status (a ``metav1.Status`` carrying the
exit code), 4 resize; under v5 the client sends ``[255, 0]`` to close stdin.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass
from types import SimpleNamespace, TracebackType
from typing import Any, Final, TypeVar
from urllib.parse import urlencode

import aiohttp
from kubernetes_asyncio.client import ApiClient, Configuration, CoreV1Api
from kubernetes_asyncio.stream import WsApiClient
from kubernetes_asyncio.stream.ws_client import get_websocket_url

from agentpool.kube.backoff import retry_after_seconds

__all__ = [
    "EXEC_PROTOCOLS",
    "ExecApiClient",
    "ExecConnectError",
    "ExecDropped",
    "ExecError",
    "ExecResult",
    "ExecSession",
    "ExecStatusError",
    "ExecTimeout",
    "exit_code_from_status",
    "open_exec",
]

V5: Final = "v5.channel.k8s.io"
V4: Final = "v4.channel.k8s.io"
EXEC_PROTOCOLS: Final = (V5, V4)

STDIN: Final = 0
STDOUT: Final = 1
STDERR: Final = 2
STATUS: Final = 3
CLOSE: Final = 255

# Frames stay well below the API server's and proxies' message limits, and one
# huge script never monopolises the socket.
WRITE_CHUNK: Final = 32 * 1024
# Enough for any Status; a failed upgrade with a bigger body is not an API server.
MAX_ERROR_BODY: Final = 64 * 1024
MAX_MESSAGE: Final = 8 * 1024 * 1024

T = TypeVar("T")


class ExecError(Exception):
    """An exec session failed; the message says what happened."""


class ExecConnectError(ExecError):
    """The WebSocket upgrade failed (HTTP error, refused connection, no subprotocol)."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        reason: str,
        body_message: str,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.body_message = body_message
        # The server's Retry-After (429/503): throttling, to be waited out, never agent loss.
        self.retry_after = retry_after


class ExecDropped(ExecError):
    """The connection ended without a channel-3 status: the exit code is unknown."""


class ExecTimeout(ExecError):
    """The session's overall deadline passed."""


class ExecStatusError(ExecError):
    """The channel-3 status reports a failure that is not an exit code."""

    def __init__(self, message: str, *, status: Mapping[str, Any]) -> None:
        super().__init__(message)
        self.status = dict(status)


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    status: dict[str, Any]


def exit_code_from_status(status: Mapping[str, Any]) -> int:
    """The command's exit code from a channel-3 ``Status``."""
    if status.get("status") == "Success":
        return 0
    details = status.get("details") or {}
    if status.get("reason") == "NonZeroExitCode":
        for cause in details.get("causes") or []:
            if cause.get("reason") == "ExitCode":
                try:
                    return int(cause.get("message", ""))
                except ValueError:
                    break
    message = status.get("message") or status.get("reason") or "unknown failure"
    raise ExecStatusError(f"exec failed: {message}", status=status)


class _UpgradeFailure:
    """What the API server said when it refused the upgrade."""

    def __init__(self) -> None:
        self.reason = ""
        self.body = b""


# aiohttp closes a refused upgrade's response before raising, so the body (the
# API server's Status, e.g. "pods x is forbidden: ...") is read in a trace hook
# and handed to the waiting open_exec() through this task-local slot.
_upgrade_failure: contextvars.ContextVar[_UpgradeFailure | None] = contextvars.ContextVar(
    "agentpool_exec_upgrade_failure", default=None
)


async def _keep_refusal(
    session: aiohttp.ClientSession,
    context: SimpleNamespace,
    params: aiohttp.TraceRequestEndParams,
) -> None:
    failure = _upgrade_failure.get()
    response = params.response
    if failure is None or response.status == 101:
        return
    failure.reason = response.reason or ""
    body = bytearray()
    try:
        while len(body) < MAX_ERROR_BODY:
            chunk = await response.content.read(MAX_ERROR_BODY - len(body))
            if not chunk:
                break
            body += chunk
    except (TimeoutError, aiohttp.ClientError, OSError):
        pass  # the status code alone still explains the refusal
    failure.body = bytes(body)


class ExecApiClient(WsApiClient):
    """kubernetes_asyncio's WebSocket API client, offering the v5 and v4 channel protocols.

    Shares its configuration (host, auth, TLS, User-Agent) and connection pool
    with the ordinary ApiClient machinery; use it only for exec.
    """

    def __init__(
        self, configuration: Configuration | None = None, *, heartbeat: float | None = None
    ) -> None:
        super().__init__(configuration, heartbeat=heartbeat)
        self._ws_session: aiohttp.ClientSession | None = None

    def _session(self) -> aiohttp.ClientSession:
        if self._ws_session is None:
            trace = aiohttp.TraceConfig()
            trace.on_request_end.append(_keep_refusal)
            base: aiohttp.ClientSession = self.rest_client.pool_manager
            self._ws_session = aiohttp.ClientSession(
                connector=base.connector,
                connector_owner=False,
                trust_env=True,
                # A session may stay open for hours; open_exec() enforces deadlines.
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=30),
                trace_configs=[trace],
            )
        return self._ws_session

    async def request(  # noqa: PLR0917 - the signature is ApiClient's
        self,
        method: str,
        url: str,
        query_params: list[tuple[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        post_params: Any = None,
        body: Any = None,
        _preload_content: bool = True,
        _request_timeout: Any = None,
    ) -> Any:
        if _preload_content:
            return await super().request(
                method,
                url,
                query_params=query_params,
                headers=headers,
                post_params=post_params,
                body=body,
                _preload_content=_preload_content,
                _request_timeout=_request_timeout,
            )
        params: list[tuple[str, Any]] = []
        for key, value in query_params or []:
            # The API server takes one `command` parameter per argument.
            if key == "command" and isinstance(value, list):
                params.extend((key, arg) for arg in value)
            else:
                params.append((key, value))
        if params:
            url += "?" + urlencode(params)
        request_headers = {
            k: v for k, v in (headers or {}).items() if k.lower() != "sec-websocket-protocol"
        }
        return self._session().ws_connect(
            get_websocket_url(url),
            headers=request_headers,
            protocols=EXEC_PROTOCOLS,
            heartbeat=self.heartbeat,
            max_msg_size=MAX_MESSAGE,
            # kubeconfig's tls-server-name, as the ordinary requests use it
            server_hostname=self.rest_client.server_hostname,
        )

    async def close(self) -> None:
        if self._ws_session is not None:
            await self._ws_session.close()
            self._ws_session = None
        await super().close()


class ExecSession:
    """One exec WebSocket: stdin in, (channel, bytes) out, then the exit code.

    ``read()`` and ``write()`` may run concurrently in different tasks.
    """

    def __init__(
        self,
        ws: aiohttp.ClientWebSocketResponse,
        *,
        description: str,
        deadline: float | None,
        timeout: float | None,
    ) -> None:
        self._ws = ws
        self.protocol: str = ws.protocol or ""
        self.description = description
        self._deadline = deadline
        self._timeout = timeout
        self._write_lock = asyncio.Lock()
        self._stdin_closed = False
        self._ended = False
        self._timed_out = False
        self._status: bytes | None = None
        self._end_detail = ""

    async def __aenter__(self) -> ExecSession:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def ended(self) -> bool:
        return self._ended

    async def write(self, data: bytes) -> None:
        """Send bytes to the command's stdin (channel 0)."""
        if self._stdin_closed:
            raise ExecError(f"exec into {self.description}: stdin is already closed")
        async with self._write_lock:
            for start in range(0, len(data), WRITE_CHUNK):
                await self._send(bytes((STDIN,)) + data[start : start + WRITE_CHUNK])

    async def close_stdin(self) -> None:
        """Signal end of input. Under v4 the protocol cannot half-close: a no-op."""
        if self._stdin_closed:
            return
        self._stdin_closed = True
        if self.protocol == V5:
            async with self._write_lock:
                await self._send(bytes((CLOSE, STDIN)))

    async def read(self) -> tuple[int, bytes] | None:
        """The next chunk of output as ``(1 | 2, data)``; None once the stream ended."""
        while not self._ended:
            msg = await self._guard(self._ws.receive())
            if msg.type == aiohttp.WSMsgType.BINARY:
                frame: bytes = msg.data
            elif msg.type == aiohttp.WSMsgType.TEXT:
                frame = msg.data.encode()
            elif msg.type in (aiohttp.WSMsgType.PING, aiohttp.WSMsgType.PONG):
                continue
            else:
                self._ended = True
                self._end_detail = self._describe_end(msg)
                return None
            if not frame:
                continue
            channel, payload = frame[0], frame[1:]
            if channel in (STDOUT, STDERR):
                if payload:
                    return channel, payload
            elif channel == STATUS:
                self._status = (self._status or b"") + payload
        return None

    async def result(self) -> ExecResult:
        """The exit code once the stream ended; reads (and discards) any output left."""
        while await self.read() is not None:
            pass
        if self._timed_out:
            raise self._timeout_error()
        if not self._status:
            detail = f" ({self._end_detail})" if self._end_detail else ""
            raise ExecDropped(
                f"exec into {self.description}: the connection ended without an exit status{detail}"
            )
        try:
            status = json.loads(self._status)
        except ValueError as error:
            raise ExecDropped(
                f"exec into {self.description}: unreadable exit status {self._status[:200]!r}"
            ) from error
        if not isinstance(status, dict):
            raise ExecDropped(f"exec into {self.description}: exit status is not a Status object")
        return ExecResult(exit_code=exit_code_from_status(status), status=status)

    async def close(self) -> None:
        """Close the WebSocket; the remote command sees its stdin end (and may be killed)."""
        self._ended = True
        if not self._ws.closed:
            await self._ws.close()

    async def _send(self, frame: bytes) -> None:
        if self._ended or self._ws.closed:
            raise ExecDropped(f"exec into {self.description}: the connection is closed")
        try:
            await self._guard(self._ws.send_bytes(frame))
        except (aiohttp.ClientError, ConnectionError) as error:
            self._ended = True
            raise ExecDropped(f"exec into {self.description}: sending failed: {error}") from error

    async def _guard(self, operation: Coroutine[Any, Any, T]) -> T:
        if self._deadline is None:
            return await operation
        try:
            async with asyncio.timeout_at(self._deadline):
                return await operation
        except TimeoutError:
            self._timed_out = True
            self._ended = True
            await self._ws.close()
            raise self._timeout_error() from None

    def _timeout_error(self) -> ExecTimeout:
        return ExecTimeout(
            f"exec into {self.description}: exceeded its deadline of {self._timeout:g} s"
        )

    def _describe_end(self, msg: aiohttp.WSMessage) -> str:
        if msg.type == aiohttp.WSMsgType.ERROR:
            return f"error: {msg.data}"
        code = self._ws.close_code
        return f"closed with code {code}" if code is not None else "closed"


def _status_message(body: bytes) -> str:
    text = body.decode("utf-8", errors="replace").strip()
    try:
        status = json.loads(text)
    except ValueError:
        return text[:500]
    if isinstance(status, dict) and isinstance(status.get("message"), str):
        return str(status["message"])
    return text[:500]


async def open_exec(
    api: ApiClient,
    namespace: str,
    pod: str,
    container: str,
    command: Sequence[str],
    *,
    stdin: bool = True,
    timeout: float | None = None,  # noqa: ASYNC109 - the deadline spans the whole session
) -> ExecSession:
    """Open an exec session; ``api`` is an :class:`ExecApiClient`, ``timeout`` the overall deadline.

    Raises ExecConnectError when the upgrade fails and ExecTimeout when the
    deadline passes while connecting.
    """
    if not isinstance(api, ExecApiClient):
        raise TypeError("open_exec() needs an ExecApiClient (see agentpool.kube.client)")
    description = f"{namespace}/{pod}/{container}"
    deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
    failure = _UpgradeFailure()
    token = _upgrade_failure.set(failure)
    try:
        async with asyncio.timeout_at(deadline):
            # The generated stub types `command` as str and the result as str; in
            # raw mode it takes a list and returns aiohttp's connect context.
            connect: Any = CoreV1Api(api).connect_get_namespaced_pod_exec
            connecting = await connect(
                pod,
                namespace,
                command=list(command),
                container=container,
                stdin=stdin,
                stdout=True,
                stderr=True,
                tty=False,
                _preload_content=False,
            )
            ws: aiohttp.ClientWebSocketResponse = await connecting
    except TimeoutError:
        raise ExecTimeout(
            f"exec into {description}: not connected within its deadline of {timeout:g} s"
        ) from None
    except aiohttp.WSServerHandshakeError as error:
        body_message = _status_message(failure.body)
        reason = failure.reason or error.message
        raise ExecConnectError(
            f"exec into {description} refused: HTTP {error.status} {reason}"
            + (f": {body_message}" if body_message else ""),
            status=error.status,
            reason=reason,
            body_message=body_message,
            retry_after=retry_after_seconds(error.headers),
        ) from error
    except (aiohttp.ClientError, OSError) as error:
        raise ExecConnectError(
            f"exec into {description}: cannot connect: {error}",
            status=0,
            reason=type(error).__name__,
            body_message="",
        ) from error
    finally:
        _upgrade_failure.reset(token)
    if ws.protocol not in EXEC_PROTOCOLS:
        await ws.close()
        raise ExecConnectError(
            f"exec into {description}: the server accepted none of {', '.join(EXEC_PROTOCOLS)}",
            status=101,
            reason="NoSubprotocol",
            body_message="",
        )
    return ExecSession(ws, description=description, deadline=deadline, timeout=timeout)
