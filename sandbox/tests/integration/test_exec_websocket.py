"""pods/exec over WebSocket against the sandbox: raw channel frames and the official client."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes import client as k8s
from kubernetes.stream import stream

from agentpool_sandbox import profiles
from agentpool_sandbox.cluster import Sandbox
from agentpool_sandbox.kubelet import KUBELET_KEY
from agentpool_sandbox.reaper import alive

V5, V4 = "v5.channel.k8s.io", "v4.channel.k8s.io"
WAIT = 20.0
EXEC = "/api/v1/namespaces/default/pods/{}/exec"


@pytest.fixture
async def sandbox(tmp_path: Path) -> AsyncIterator[Sandbox]:
    async with Sandbox(state_dir=tmp_path / "state") as sb:
        await start_pod(sb, "agent", env=[{"name": "STAGE", "value": "test"}], workingDir="/ws")
        yield sb


@pytest.fixture
async def http(sandbox: Sandbox) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(sandbox.url) as session:
        yield session


async def start_pod(
    sandbox: Sandbox,
    name: str,
    profile: str = "standard",
    containers: list[str] | None = None,
    **container: Any,
) -> None:
    """Create a pod and wait until the kubelet reports it Running (or settled, when not)."""
    sandbox.store.create(
        "pods",
        "default",
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "annotations": {profiles.PROFILE_ANNOTATION: profile}},
            "spec": {
                "containers": [
                    {"name": c, "image": "alpine", **container} for c in containers or ["main"]
                ]
            },
        },
    )
    settled: Callable[[dict[str, Any]], bool] = (
        (lambda obj: obj["status"].get("phase") == "Running")
        if profile == "standard"
        else (lambda obj: bool(obj["status"].get("conditions")))
    )

    async def wait() -> None:
        async for _, obj in sandbox.store.subscribe("pods", "default"):
            if obj["metadata"]["name"] == name and settled(obj):
                return

    await asyncio.wait_for(wait(), WAIT)


def exec_params(
    *command: str, stdin: bool = False, container: str | None = None
) -> list[tuple[str, str]]:
    params = [("command", part) for part in command]
    params += [("stdout", "true"), ("stderr", "true"), ("stdin", "true" if stdin else "false")]
    if container:
        params.append(("container", container))
    return params


class Result:
    def __init__(self) -> None:
        self.channels: dict[int, bytearray] = {}
        self.order: list[int] = []

    def add(self, data: bytes) -> None:
        self.channels.setdefault(data[0], bytearray()).extend(data[1:])
        self.order.append(data[0])

    def text(self, channel: int) -> str:
        return bytes(self.channels.get(channel, b"")).decode()

    @property
    def status(self) -> dict[str, Any]:
        return dict(json.loads(bytes(self.channels[3])))


async def run_exec(
    http: aiohttp.ClientSession,
    *command: str,
    stdin: bytes | None = None,
    protocols: tuple[str, ...] = (V5, V4),
    close_stdin: bool = True,
    pod: str = "agent",
) -> tuple[str | None, Result]:
    result = Result()
    params = exec_params(*command, stdin=stdin is not None)
    async with http.ws_connect(
        EXEC.format(pod), params=params, protocols=protocols, max_msg_size=0
    ) as ws:
        if stdin is not None:
            await ws.send_bytes(b"\x00" + stdin)
            if close_stdin:
                await ws.send_bytes(b"\xff\x00")
        async for message in ws:
            assert message.type == aiohttp.WSMsgType.BINARY
            result.add(message.data)
        return ws.protocol, result


async def test_v5_stdin_close_and_separate_streams(http: aiohttp.ClientSession) -> None:
    protocol, result = await run_exec(
        http, "sh", "-c", "tr a-z A-Z; echo to-err >&2", stdin=b"hello\nworld\n"
    )

    assert protocol == V5
    assert result.text(1) == "HELLO\nWORLD\n"
    assert result.text(2) == "to-err\n"
    assert result.status == {"metadata": {}, "status": "Success"}


async def test_exit_code_arrives_on_channel_3(http: aiohttp.ClientSession) -> None:
    _, result = await run_exec(http, "sh", "-c", "echo out; exit 3")

    assert result.text(1) == "out\n"
    assert result.status["reason"] == "NonZeroExitCode"
    assert result.status["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]
    assert result.order[-1] == 3


async def test_v4_is_negotiated_when_offered_alone(http: aiohttp.ClientSession) -> None:
    protocol, result = await run_exec(
        http, "head", "-n", "1", stdin=b"only line\n", protocols=(V4,), close_stdin=False
    )

    assert protocol == V4
    assert result.text(1) == "only line\n"
    assert result.status["status"] == "Success"


async def test_binary_stdin_round_trips_exactly(http: aiohttp.ClientSession) -> None:
    payload = bytes(range(256)) * 64

    _, result = await run_exec(http, "cat", stdin=payload)

    assert bytes(result.channels[1]) == payload


async def test_large_output_streams_completely(http: aiohttp.ClientSession) -> None:
    size = 24 * 1024 * 1024

    _, result = await run_exec(http, "head", "-c", str(size), "/dev/zero")

    assert len(result.channels[1]) == size
    assert result.status["status"] == "Success"
    assert result.order.count(1) > 1


async def test_exec_runs_in_the_container_directory_with_its_env(
    sandbox: Sandbox, http: aiohttp.ClientSession
) -> None:
    _, result = await run_exec(http, "sh", "-c", 'echo "$STAGE $(pwd) $HOME"')

    home = sandbox.state_dir / "pods" / "default" / "agent" / "main"
    assert result.text(1) == f"test {(home / 'ws').resolve()} {home}\n"


async def test_missing_command_binary_reports_an_internal_error(
    http: aiohttp.ClientSession,
) -> None:
    _, result = await run_exec(http, "no-such-binary-here")

    assert result.status["reason"] == "InternalError"
    assert "no-such-binary-here" in result.status["message"]


@pytest.mark.parametrize(
    ("pod", "params", "code", "message"),
    [
        ("ghost", exec_params("true"), 404, 'pods "ghost" not found'),
        ("agent", [("stdout", "true")], 400, "at least 1 command"),
        ("agent", exec_params("true", container="nope"), 400, "container nope is not valid"),
    ],
)
async def test_invalid_exec_requests_fail_before_upgrade(
    http: aiohttp.ClientSession, pod: str, params: list[tuple[str, str]], code: int, message: str
) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as error:
        await http.ws_connect(EXEC.format(pod), params=params, protocols=(V5,))

    assert error.value.status == code
    async with http.get(EXEC.format(pod), params=params) as response:
        assert message in (await response.json())["message"]


async def test_unsupported_subprotocol_is_refused(http: aiohttp.ClientSession) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as error:
        await http.ws_connect(EXEC.format("agent"), params=exec_params("true"), protocols=("v9",))

    assert error.value.status == 400


@pytest.mark.parametrize(
    ("name", "pod", "message"),
    [
        pytest.param(
            "duo",
            {"containers": ["a", "b"]},
            "a container name must be specified for pod duo, choose one of: [a b]",
            id="container-required-when-several",
        ),
        pytest.param(
            "pending",
            {"profile": "unschedulable"},
            "pod pending does not have a host assigned",
            id="pod-not-running",
        ),
    ],
)
async def test_exec_is_refused_with_the_api_servers_message(
    sandbox: Sandbox, http: aiohttp.ClientSession, name: str, pod: dict[str, Any], message: str
) -> None:
    await start_pod(sandbox, name, **pod)

    async with http.get(EXEC.format(name), params=exec_params("true")) as response:
        body = await response.json()

    assert response.status == 400
    assert body["message"] == message


async def test_deleting_the_pod_kills_exec_processes(
    sandbox: Sandbox, http: aiohttp.ClientSession
) -> None:
    _, result = await run_exec(http, "sh", "-c", "sleep 1000 >/dev/null 2>&1 & echo $!")
    background = int(result.text(1))
    assert alive(background)
    groups = sandbox.app[KUBELET_KEY].get().runtime.groups("default", "agent")
    assert groups

    sandbox.store.delete("pods", "default", "agent")

    async def gone() -> None:
        # Process exit (of grandchildren too) has no event to await: poll /proc, bounded.
        while alive(background) or any(alive(pid) for pid in groups):  # noqa: ASYNC110
            await asyncio.sleep(0.02)

    await asyncio.wait_for(gone(), WAIT)


def _official_exec(url: str, protocol: str | None) -> tuple[str, str, str, int]:
    configuration = k8s.Configuration()
    configuration.host = url
    api = k8s.CoreV1Api(k8s.ApiClient(configuration))
    extra = {"_headers": {"sec-websocket-protocol": protocol}} if protocol else {}
    response = stream(
        api.connect_get_namespaced_pod_exec,
        "agent",
        "default",
        command=["sh", "-c", "echo out; echo err >&2; exit 3"],
        stderr=True,
        stdin=False,
        stdout=True,
        tty=False,
        _preload_content=False,
        **extra,
    )
    response.run_forever(timeout=WAIT)
    return response.subprotocol, response.read_stdout(), response.read_stderr(), response.returncode


@pytest.mark.parametrize(("offer", "negotiated"), [(None, V5), (V4, V4)])
async def test_official_python_client_stream(
    sandbox: Sandbox, offer: str | None, negotiated: str
) -> None:
    outcome = await asyncio.to_thread(_official_exec, sandbox.url, offer)

    assert outcome == (negotiated, "out\n", "err\n", 3)


async def test_tty_gives_a_terminal_that_resizes(http: aiohttp.ClientSession) -> None:
    script = 'read line; [ -t 1 ] && echo is-a-tty; stty size; echo "got $line"'
    params = [("command", "sh"), ("command", "-c"), ("command", script)]
    params += [("stdin", "true"), ("stdout", "true"), ("tty", "true")]
    result = Result()

    async with http.ws_connect(EXEC.format("agent"), params=params, protocols=(V5,)) as ws:
        await ws.send_bytes(b'\x04{"Width":100,"Height":30}')
        await ws.send_bytes(b"\x00hello\n")
        async for message in ws:
            result.add(message.data)

    output = result.text(1).replace("\r\n", "\n")
    assert "is-a-tty\n30 100\ngot hello\n" in output
    assert 2 not in result.channels
    assert result.status["status"] == "Success"


async def test_output_streams_before_the_command_ends(http: aiohttp.ClientSession) -> None:
    params = exec_params("sh", "-c", "echo first; read x; echo second", stdin=True)

    async with http.ws_connect(EXEC.format("agent"), params=params, protocols=(V5,)) as ws:
        first = await asyncio.wait_for(ws.receive_bytes(), WAIT)
        await ws.send_bytes(b"\x00go\n")
        rest = [message.data async for message in ws]

    assert first == b"\x01first\n"
    assert rest[0] == b"\x01second\n"


async def test_base64_protocol_uses_text_frames(http: aiohttp.ClientSession) -> None:
    params = exec_params("sh", "-c", "head -c 5; exit 2", stdin=True)

    async with http.ws_connect(
        EXEC.format("agent"), params=params, protocols=("base64.channel.k8s.io",)
    ) as ws:
        await ws.send_str("0" + base64.b64encode(b"\xffdata").decode())
        frames = [message.data async for message in ws]

    assert ws.protocol == "base64.channel.k8s.io"
    decoded = [(frame[0], base64.b64decode(frame[1:])) for frame in frames]
    assert decoded[0] == ("1", b"\xffdata")
    assert decoded[-1][0] == "3" and decoded[-1][1].endswith(b"exit code 2")


async def test_original_protocol_reports_only_the_error_text(http: aiohttp.ClientSession) -> None:
    protocol, result = await run_exec(http, "sh", "-c", "exit 4", protocols=("channel.k8s.io",))

    assert protocol == "channel.k8s.io"
    assert result.text(3).endswith("exit code 4")


async def test_stdin_may_arrive_in_text_frames(http: aiohttp.ClientSession) -> None:
    params = exec_params("head", "-n", "1", stdin=True)

    async with http.ws_connect(EXEC.format("agent"), params=params, protocols=(V5,)) as ws:
        await ws.send_str("\x00typed line\n")
        frames = [message.data async for message in ws]

    assert frames[0] == b"\x01typed line\n"
