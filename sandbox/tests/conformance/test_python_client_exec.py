"""The official `kubernetes` client's exec stream against the sandbox, over v5 and v4."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from conformance_cluster import Cluster
from kubernetes import client, config
from kubernetes.stream import stream

POD = """
apiVersion: v1
kind: Pod
metadata:
  name: py
spec:
  containers:
    - name: main
      image: busybox:1.36
      command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 3600 & wait $!; done"]
"""
PROTOCOLS = ["v5.channel.k8s.io", "v4.channel.k8s.io"]
TIMEOUT = 30


@pytest.fixture
def core(cluster: Cluster, namespace: str) -> Iterator[tuple[Any, str]]:
    """A CoreV1Api for the sandbox and the namespace of a running pod `py`."""
    cluster.ok("apply", "-n", namespace, "-f", "-", input=POD)
    cluster.ok("wait", "-n", namespace, "--for=condition=Ready", "--timeout=60s", "pod/py")
    api_client = config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(cluster.kubeconfig)
    )
    try:
        yield client.CoreV1Api(api_client), namespace
    finally:
        api_client.close()


def open_exec(core: tuple[Any, str], protocol: str, command: list[str], stdin: bool) -> Any:
    api, namespace = core
    return stream(
        api.connect_get_namespaced_pod_exec,
        "py",
        namespace,
        command=command,
        stdin=stdin,
        stdout=True,
        stderr=True,
        tty=False,
        _preload_content=False,
        _headers={"sec-websocket-protocol": protocol},
    )


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_streams_and_exit_code(core: tuple[Any, str], protocol: str) -> None:
    ws = open_exec(core, protocol, ["sh", "-c", "echo out; echo err >&2; exit 3"], stdin=False)

    ws.run_forever(timeout=TIMEOUT)

    assert not ws.is_open()
    assert ws.subprotocol == protocol
    assert ws.read_stdout(timeout=TIMEOUT) == "out\n"
    assert ws.read_stderr(timeout=TIMEOUT) == "err\n"
    assert ws.returncode == 3


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_success_exit_code_is_zero(core: tuple[Any, str], protocol: str) -> None:
    ws = open_exec(core, protocol, ["true"], stdin=False)

    ws.run_forever(timeout=TIMEOUT)

    assert ws.returncode == 0


def test_stdin_close_ends_input_over_v5(core: tuple[Any, str]) -> None:
    ws = open_exec(core, PROTOCOLS[0], ["sh", "-c", "cat; echo end"], stdin=True)

    ws.write_stdin("hello\n")
    ws.close_channel(0)
    ws.run_forever(timeout=TIMEOUT)

    assert ws.read_stdout(timeout=TIMEOUT) == "hello\nend\n"
    assert ws.returncode == 0


def test_stdin_over_v4(core: tuple[Any, str]) -> None:
    # v4 cannot signal end of input, so the command reads a known amount.
    ws = open_exec(core, PROTOCOLS[1], ["sh", "-c", "read line; echo got $line"], stdin=True)

    ws.write_stdin("hello\n")
    ws.run_forever(timeout=TIMEOUT)

    assert ws.read_stdout(timeout=TIMEOUT) == "got hello\n"
    assert ws.returncode == 0


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_preloaded_exec_returns_output(core: tuple[Any, str], protocol: str) -> None:
    api, namespace = core

    out = stream(
        api.connect_get_namespaced_pod_exec,
        "py",
        namespace,
        command=["sh", "-c", "echo preloaded"],
        stdout=True,
        stderr=True,
        stdin=False,
        tty=False,
        _headers={"sec-websocket-protocol": protocol},
    )

    assert out == "preloaded\n"
