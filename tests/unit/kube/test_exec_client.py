"""ExecSession against a tiny exec endpoint that runs real commands on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import WSMsgType, web
from kubernetes_asyncio.client import Configuration

from agentpool import USER_AGENT
from agentpool.kube.client import new_exec_client
from agentpool.kube.exec import (
    V4,
    V5,
    ExecApiClient,
    ExecConnectError,
    ExecDropped,
    ExecSession,
    ExecStatusError,
    ExecTimeout,
    exit_code_from_status,
    open_exec,
)


@dataclass
class FakeExecServer:
    """The pod exec subresource; pod names choose the behaviour under test."""

    protocols: tuple[str, ...] = (V5, V4)
    requests: list[web.Request] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request)
        pod = request.match_info["pod"]
        if pod in ("forbidden", "missing"):
            code, reason = (403, "Forbidden") if pod == "forbidden" else (404, "NotFound")
            return web.json_response(
                {
                    "kind": "Status",
                    "status": "Failure",
                    "reason": reason,
                    "code": code,
                    "message": f'pods "{pod}" is {reason.lower()}: no exec for you',
                },
                status=code,
            )
        ws = web.WebSocketResponse(protocols=self.protocols)
        await ws.prepare(request)
        process = await asyncio.create_subprocess_exec(
            *request.query.getall("command"),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert process.stdin and process.stdout and process.stderr

        async def feed() -> None:
            async for msg in ws:
                if msg.type != WSMsgType.BINARY:
                    continue
                if msg.data[0] == 0:
                    process.stdin.write(msg.data[1:])
                    await process.stdin.drain()
                elif msg.data == b"\xff\x00":
                    process.stdin.close()
            if process.returncode is None:  # the client went away
                process.kill()

        async def pump(stream: asyncio.StreamReader, channel: int) -> None:
            while chunk := await stream.read(65536):
                await ws.send_bytes(bytes((channel,)) + chunk)

        feeder = asyncio.create_task(feed())
        await asyncio.gather(pump(process.stdout, 1), pump(process.stderr, 2))
        code = await process.wait()
        if pod != "drop":
            status: dict[str, Any] = {"metadata": {}, "status": "Success"}
            if code:
                status = {
                    "metadata": {},
                    "status": "Failure",
                    "reason": "NonZeroExitCode",
                    "message": f"command terminated with non-zero exit code: {code}",
                    "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
                }
            await ws.send_bytes(b"\x03" + json.dumps(status).encode())
        await ws.close()
        feeder.cancel()
        return ws


@pytest.fixture
async def server() -> AsyncIterator[tuple[FakeExecServer, ExecApiClient]]:
    fake = FakeExecServer()
    app = web.Application()
    app.router.add_get("/api/v1/namespaces/{namespace}/pods/{pod}/exec", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    await web.SockSite(runner, sock).start()
    client = new_exec_client(Configuration(host=f"http://127.0.0.1:{sock.getsockname()[1]}"))
    yield fake, client
    await client.close()
    await runner.cleanup()


async def collect(session: ExecSession) -> dict[int, bytes]:
    out = {1: b"", 2: b""}
    while (chunk := await session.read()) is not None:
        out[chunk[0]] += chunk[1]
    return out


async def test_v5_stdin_round_trip_and_exit_zero(
    server: tuple[FakeExecServer, ExecApiClient],
) -> None:
    _, client = server
    async with await open_exec(client, "ns", "agent", "main", ["cat"]) as session:
        await session.write(b"hello")
        await session.close_stdin()
        out = await collect(session)
        result = await session.result()
    assert (session.protocol, out[1], result.exit_code) == (V5, b"hello", 0)


async def test_nonzero_exit_code_and_stderr_apart(
    server: tuple[FakeExecServer, ExecApiClient],
) -> None:
    _, client = server
    command = ["sh", "-c", "echo out; echo err >&2; exit 3"]
    async with await open_exec(client, "ns", "agent", "main", command, stdin=False) as session:
        out = await collect(session)
        result = await session.result()
    assert (out[1], out[2], result.exit_code) == (b"out\n", b"err\n", 3)
    assert result.status["reason"] == "NonZeroExitCode"


async def test_binary_and_large_data_pass_unchanged(
    server: tuple[FakeExecServer, ExecApiClient],
) -> None:
    _, client = server
    data = bytes(range(256)) * 20_000  # 5 MB, every byte value, many frames
    async with await open_exec(client, "ns", "agent", "main", ["cat"]) as session:

        async def send() -> None:
            await session.write(data)
            await session.close_stdin()

        sending = asyncio.create_task(send())
        out = await collect(session)
        await sending
        result = await session.result()
    assert out[1] == data
    assert result.exit_code == 0


async def test_falls_back_to_v4(server: tuple[FakeExecServer, ExecApiClient]) -> None:
    fake, client = server
    fake.protocols = (V4,)
    command = ["sh", "-c", "echo hi; exit 2"]
    async with await open_exec(client, "ns", "agent", "main", command, stdin=False) as session:
        await session.close_stdin()  # a documented no-op under v4
        out = await collect(session)
        result = await session.result()
    assert (session.protocol, out[1], result.exit_code) == (V4, b"hi\n", 2)


async def test_no_common_subprotocol_is_a_connect_error(
    server: tuple[FakeExecServer, ExecApiClient],
) -> None:
    fake, client = server
    fake.protocols = ("channel.k8s.io",)
    with pytest.raises(ExecConnectError, match="accepted none of"):
        await open_exec(client, "ns", "agent", "main", ["true"])


async def test_connection_ending_without_status_is_dropped(
    server: tuple[FakeExecServer, ExecApiClient],
) -> None:
    _, client = server
    async with await open_exec(client, "ns", "drop", "main", ["echo", "partial"]) as session:
        out = await collect(session)
        with pytest.raises(ExecDropped, match="without an exit status"):
            await session.result()
    assert out[1] == b"partial\n"


@pytest.mark.parametrize(("pod", "status"), [("forbidden", 403), ("missing", 404)])
async def test_refused_upgrade_carries_the_api_servers_message(
    server: tuple[FakeExecServer, ExecApiClient], pod: str, status: int
) -> None:
    _, client = server
    with pytest.raises(ExecConnectError) as caught:
        await open_exec(client, "ns", pod, "main", ["true"])
    assert caught.value.status == status
    assert caught.value.body_message.endswith("no exec for you")
    assert f"HTTP {status}" in str(caught.value)
    assert "no exec for you" in str(caught.value)


async def test_unreachable_server_is_a_connect_error() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    client = new_exec_client(Configuration(host=f"http://127.0.0.1:{port}"))
    try:
        with pytest.raises(ExecConnectError) as caught:
            await open_exec(client, "ns", "agent", "main", ["true"])
    finally:
        await client.close()
    assert caught.value.status == 0


async def test_deadline_ends_a_running_command(
    server: tuple[FakeExecServer, ExecApiClient],
) -> None:
    _, client = server
    session = await open_exec(client, "ns", "agent", "main", ["sleep", "30"], timeout=0.5)
    with pytest.raises(ExecTimeout, match=r"deadline of 0\.5 s"):
        await session.read()
    with pytest.raises(ExecTimeout):
        await session.result()
    await session.close()


async def test_request_names_the_operator_and_the_command(
    server: tuple[FakeExecServer, ExecApiClient],
) -> None:
    fake, client = server
    async with await open_exec(client, "ns", "agent", "main", ["sh", "-c", "true"]) as session:
        await session.result()
    request = fake.requests[-1]
    assert request.headers["User-Agent"] == USER_AGENT
    assert request.query.getall("command") == ["sh", "-c", "true"]
    assert request.query["container"] == "main"
    assert request.headers["Sec-WebSocket-Protocol"] == f"{V5},{V4}"


def test_exit_code_from_status() -> None:
    assert exit_code_from_status({"status": "Success"}) == 0
    failure = {
        "status": "Failure",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": "42"}]},
    }
    assert exit_code_from_status(failure) == 42


def test_status_without_exit_code_is_a_status_error() -> None:
    status = {"status": "Failure", "reason": "InternalError", "message": "executable not found"}
    with pytest.raises(ExecStatusError, match="executable not found"):
        exit_code_from_status(status)


async def test_writing_after_the_end_is_dropped(
    server: tuple[FakeExecServer, ExecApiClient],
) -> None:
    _, client = server
    async with await open_exec(client, "ns", "drop", "main", ["true"]) as session:
        assert await collect(session) == {1: b"", 2: b""}
        with pytest.raises(ExecDropped, match="closed"):
            await session.write(b"too late")
