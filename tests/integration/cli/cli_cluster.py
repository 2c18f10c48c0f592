"""Helpers for the CLI tests: objects to apply, and running `agentpool` as a real process."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio.client import ApiClient, CustomObjectsApi

from agentpool.kube import client as kube

NS = "default"
AGENTPOOL = [sys.executable, "-m", "agentpool.cli"]
# Wide enough that rich never wraps a line the tests look for.
ENV = {**os.environ, "COLUMNS": "200", "TERM": "dumb"}


def pool_body(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "agentpool.dev/v1alpha1",
        "kind": "AgentPool",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "template": {
                "metadata": {"annotations": {"sandbox.agentpool.dev/profile": "standard"}},
                "spec": {"containers": [{"name": "agent", "image": "busybox"}]},
            },
            **spec,
        },
    }


def step_body(name: str, pool: str, script: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "agentpool.dev/v1alpha1",
        "kind": "BuildStep",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"pool": pool, "script": script, **spec},
    }


async def create(api: ApiClient, body: dict[str, Any]) -> None:
    plural = kube.AGENTPOOLS if body["kind"] == "AgentPool" else kube.BUILDSTEPS
    await CustomObjectsApi(api).create_namespaced_custom_object(
        kube.GROUP, kube.VERSION, NS, plural, body
    )


async def phase(api: ApiClient, step: str) -> str | None:
    body = await kube.get_object(api, kube.BUILDSTEPS, NS, step)
    found = (body.get("status") or {}).get("phase")
    return str(found) if found else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class Done:
    code: int
    out: str
    err: str


async def agentpool(*args: str, within: float = 30.0, env: dict[str, str] | None = None) -> Done:
    """Run `agentpool ARGS` to completion in a child process."""
    process = await asyncio.create_subprocess_exec(
        *AGENTPOOL,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env or ENV,
    )
    try:
        async with asyncio.timeout(within):
            out, err = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    return Done(process.returncode or 0, out.decode(), err.decode())


async def start(*args: str, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    """Start `agentpool ARGS` with piped stdout and stderr (read them with `read_until`)."""
    return await asyncio.create_subprocess_exec(
        *AGENTPOOL,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env or ENV,
    )


async def read_until(stream: asyncio.StreamReader | None, text: str, within: float) -> str:
    """Lines of `stream` up to and including the first one holding `text` (all of them)."""
    assert stream is not None
    seen: list[str] = []
    async with asyncio.timeout(within):
        while True:
            raw = await stream.readline()
            if not raw:
                raise AssertionError(f"the stream ended before {text!r}; got {seen!r}")
            seen.append(raw.decode())
            if text in seen[-1]:
                return "".join(seen)


async def finish(process: asyncio.subprocess.Process, within: float = 30.0) -> Done:
    """Wait for a started process; its exit code and the rest of its output."""
    try:
        async with asyncio.timeout(within):
            out, err = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    return Done(process.returncode or 0, out.decode(), err.decode())
