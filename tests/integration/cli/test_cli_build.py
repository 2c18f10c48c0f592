"""`agentpool build run|list|logs|cancel|rerun` as real processes against the real operator."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_cluster import (
    AGENTPOOL,
    ENV,
    NS,
    Done,
    agentpool,
    create,
    finish,
    pool_body,
    read_until,
    start,
)
from kubernetes_asyncio.client import ApiClient

from agentpool.config import Config
from agentpool.kube import client as kube
from agentpool_sandbox.cluster import Sandbox

Until = Callable[..., Awaitable[Any]]
POOL = "ci"


@pytest.fixture
def sandbox_time_scale() -> float:
    return 0.2


@pytest.fixture
def operator_config(operator_config: Config) -> Config:
    return dataclasses.replace(operator_config, log_tail_bytes=64)


def manifest(name: str, script: str, *, generate: bool = False, **spec: Any) -> dict[str, Any]:
    meta = {"generateName": f"{name}-"} if generate else {"name": name}
    return {
        "apiVersion": "agentpool.dev/v1alpha1",
        "kind": "BuildStep",
        "metadata": meta,
        "spec": {"pool": POOL, "script": script, **spec},
    }


# Quick steps printing more than the status keeps (log tail of 64 bytes below): their whole
# output must be captured while they run, before the operator removes their files.
COMPILE = 'echo "compiling"; i=1; while [ $i -le 30 ]; do echo "module $i"; i=$((i+1)); done'
COMPILED = "compiling\n" + "".join(f"module {i}\n" for i in range(1, 31))
FAILING_BUILD = [
    manifest("compile", COMPILE + '; echo "compiled" >&2', generate=True),
    manifest("test", 'echo "testing"; echo "2 tests failed" >&2; exit 3'),
    manifest("publish", 'echo "publishing"'),
    manifest("report", 'echo "reporting"', runPolicy="Always"),
]


def write_manifests(path: Path, documents: list[dict[str, Any]]) -> str:
    path.write_text(yaml.safe_dump_all(documents))
    return str(path)


async def steps_of(api: ApiClient, build: str) -> list[dict[str, Any]]:
    bodies = await kube.list_objects(api, kube.BUILDSTEPS, NS)
    return [b for b in bodies if (b["spec"].get("build") or b["metadata"]["name"]) == build]


@pytest.fixture
async def pool(operator: Any, kube_api: ApiClient) -> str:
    await create(kube_api, pool_body(POOL, minIdle=1))
    return POOL


async def test_build_run_streams_in_order_and_exits_with_the_failed_steps_code(
    pool: str, kube_api: ApiClient, cluster: Sandbox, tmp_path: Path
) -> None:
    file = write_manifests(tmp_path / "build.yaml", FAILING_BUILD)

    done = await agentpool(
        "build", "run", "-f", file, "--build", "pr-42", "--kubeconfig", str(cluster.kubeconfig_path)
    )

    assert done.code == 3, done.err
    out = done.out
    positions = [
        out.index(text)
        for text in (
            "] step compile-",
            COMPILED + "compiled\n",
            "] step test (build pr-42)",
            "testing\n2 tests failed\n",
            "step test Failed (exit 3)",
            "] step publish (build pr-42)",
            "step publish Skipped: PreviousStepFailed",
            "] step report (build pr-42)",
            "reporting\n",
            "step report Succeeded (exit 0)",
        )
    ]
    assert positions == sorted(positions)
    assert "publishing" not in out
    assert "no longer on agent" not in out
    assert "build pr-42 failed: step test: ScriptFailed" in done.err
    created = await steps_of(kube_api, "pr-42")
    assert len(created) == 4
    assert any(b["metadata"]["name"].startswith("compile-") for b in created)


async def test_build_run_of_a_successful_build_from_stdin_exits_0(
    pool: str, cluster: Sandbox
) -> None:
    documents = [manifest("one", "echo one"), manifest("two", "echo two")]
    listed = yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": documents})

    done = await run_with_stdin(listed, "--build", "ok-1", cluster=cluster)

    assert done.code == 0, done.err
    assert done.out.index("one\n") < done.out.index("two\n")
    assert "build ok-1 succeeded" in done.err


async def run_with_stdin(text: str, *args: str, cluster: Sandbox) -> Done:
    """`agentpool build run -f - ARGS` with `text` on its stdin."""
    process = await asyncio.create_subprocess_exec(
        *AGENTPOOL,
        "build",
        "run",
        "-f",
        "-",
        *args,
        "--kubeconfig",
        str(cluster.kubeconfig_path),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=ENV,
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate(text.encode())
    return Done(process.returncode or 0, out.decode(), err.decode())


async def test_build_run_no_follow_only_creates(
    pool: str, kube_api: ApiClient, cluster: Sandbox, tmp_path: Path
) -> None:
    file = write_manifests(tmp_path / "b.yaml", [manifest("solo", "echo solo", generate=True)])

    done = await agentpool(
        "build", "run", "-f", file, "--no-follow", "--kubeconfig", str(cluster.kubeconfig_path)
    )

    assert done.code == 0, done.err
    (line,) = done.out.splitlines()
    assert line.startswith("buildstep.agentpool.dev/solo-") and line.endswith(" created")
    name = line.split("/")[1].split()[0]
    assert (await kube.get_object(kube_api, kube.BUILDSTEPS, NS, name))["metadata"]["name"] == name


async def test_ctrl_c_cancels_the_build_and_exits_130(
    pool: str, kube_api: ApiClient, cluster: Sandbox, until: Until, tmp_path: Path
) -> None:
    documents = [
        manifest("long", 'echo "long started"; sleep 120'),
        manifest("after", "echo never"),
    ]
    file = write_manifests(tmp_path / "long.yaml", documents)

    process = await start(
        "build", "run", "-f", file, "--build", "cx", "--kubeconfig", str(cluster.kubeconfig_path)
    )
    await read_until(process.stdout, "long started", 30.0)
    process.send_signal(signal.SIGINT)
    done = await finish(process)

    assert done.code == 130, done.err
    assert "interrupted: cancelled build cx (steps long, after)" in done.err
    for body in await steps_of(kube_api, "cx"):
        assert body["metadata"]["annotations"]["agentpool.dev/cancel"] == "true"

    async def cancelled() -> bool:
        bodies = await steps_of(kube_api, "cx")
        phases = {b["metadata"]["name"]: (b.get("status") or {}).get("phase") for b in bodies}
        # `after` is Cancelled by its own annotation, or Skipped if the operator got there first.
        return phases["long"] == "Cancelled" and phases["after"] in ("Cancelled", "Skipped")

    # The operator honours the annotation: the running step is stopped.
    await until(cancelled, 30.0, "the build's steps to be Cancelled")


async def test_sigterm_exits_143(pool: str, cluster: Sandbox, tmp_path: Path) -> None:
    file = write_manifests(tmp_path / "t.yaml", [manifest("term", 'echo "up"; sleep 120')])

    process = await start("build", "run", "-f", file, "--kubeconfig", str(cluster.kubeconfig_path))
    await read_until(process.stdout, "up", 30.0)
    process.send_signal(signal.SIGTERM)
    done = await finish(process)

    assert done.code == 143, done.err
    assert "interrupted: cancelled build term (steps term)" in done.err


async def test_build_list_logs_rerun_and_cancel(
    pool: str, kube_api: ApiClient, cluster: Sandbox, tmp_path: Path
) -> None:
    kubeconfig = str(cluster.kubeconfig_path)
    file = write_manifests(tmp_path / "build.yaml", FAILING_BUILD)
    assert (
        await agentpool("build", "run", "-f", file, "--build", "b1", "--kubeconfig", kubeconfig)
    ).code == 3

    listed = await agentpool("build", "list", "--kubeconfig", kubeconfig)
    logs = await agentpool("build", "logs", "b1", "--kubeconfig", kubeconfig)
    rerun = await agentpool("build", "rerun", "b1", "--build", "b2", "--kubeconfig", kubeconfig)
    cancel = await agentpool("build", "cancel", "b2", "--kubeconfig", kubeconfig)
    missing = await agentpool("build", "logs", "nope", "--kubeconfig", kubeconfig)

    assert listed.code == 0, listed.err
    header, row = listed.out.splitlines()
    assert header.split() == ["BUILD", "POOL", "PHASE", "STEPS", "AGENT", "STARTED", "DURATION"]
    assert row.split()[:4] == ["b1", POOL, "Failed", "4/4"]
    assert logs.code == 0, logs.err
    # Once the build is done the operator has removed the steps' files: what is left is each
    # step's status.logTail (64 bytes here), said so in a note.
    assert logs.out.index("module 30") < logs.out.index("testing") < logs.out.index("reporting")
    assert "printed the last 64 of" in logs.out
    assert "step publish Skipped" in logs.out
    assert rerun.code == 3, rerun.err
    assert "build b2 failed: step test-" in rerun.err
    rerun_steps = await steps_of(kube_api, "b2")
    generated = sorted(b["metadata"]["generateName"] for b in rerun_steps)
    assert generated[0].startswith("compile-") and generated[0].endswith("-")
    assert generated[1:] == ["publish-", "report-", "test-"]
    assert [b["spec"]["script"] for b in sorted(rerun_steps, key=lambda b: b["spec"]["order"])] == [
        m["spec"]["script"] for m in FAILING_BUILD
    ]
    assert cancel.code == 0
    assert cancel.out.strip() == "build b2: every step is already final (or being cancelled)"
    assert missing.code == 1
    assert "no BuildStep of namespace default has spec.build 'nope'" in missing.err


async def test_bad_manifests_fail_in_one_line(cluster: Sandbox, tmp_path: Path) -> None:
    file = tmp_path / "cm.yaml"
    file.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")

    done = await agentpool(
        "build", "run", "-f", str(file), "--kubeconfig", str(cluster.kubeconfig_path)
    )

    assert done.code == 1
    assert done.err.strip().splitlines() == [
        f"Error: {file}: document 1 is a ConfigMap, not a BuildStep: build run takes BuildSteps "
        "only (apply pools with kubectl)"
    ]
