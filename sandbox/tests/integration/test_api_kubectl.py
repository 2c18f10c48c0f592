"""The real kubectl against the sandbox API server: discovery, apply, get, patch, wait, watch."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agentpool_sandbox.cluster import Sandbox

ROOT = Path(__file__).resolve().parents[3]
KUBECTL = Path(sys.executable).parent / "kubectl"
DEADLINE = 60.0

CONFIGMAP = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  level: "{level}"
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
      - name: web
        image: busybox
        env: [{{name: LEVEL, value: "{level}"}}]
"""


@pytest.fixture
async def kubeconfig() -> AsyncIterator[Path]:
    async with Sandbox() as sandbox:
        yield sandbox.kubeconfig_path


async def kubectl(kubeconfig: Path, *args: str, stdin: str | None = None) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        str(KUBECTL),
        "--kubeconfig",
        str(kubeconfig),
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(DEADLINE):
        output, _ = await process.communicate(stdin.encode() if stdin else None)
    return process.returncode or 0, output.decode()


async def install_crds_and_examples(kubeconfig: Path) -> None:
    code, output = await kubectl(kubeconfig, "apply", "-f", str(ROOT / "crds"))
    assert code == 0, output
    code, output = await kubectl(
        kubeconfig,
        "wait",
        "--for=condition=Established",
        "crd/agentpools.agentpool.dev",
        "crd/buildsteps.agentpool.dev",
        "--timeout=20s",
    )
    assert code == 0, output
    code, output = await kubectl(kubeconfig, "apply", "-f", str(ROOT / "examples"))
    assert code == 0, output


async def test_apply_wait_and_get_with_printer_columns(kubeconfig: Path) -> None:
    await install_crds_and_examples(kubeconfig)
    code, output = await kubectl(kubeconfig, "get", "ap")
    header = output.splitlines()[0].split()
    assert code == 0
    assert header[:4] == ["NAME", "READY", "IDLE", "BUSY"] and header[-1] == "AGE"


async def test_second_apply_updates_custom_and_builtin_objects(kubeconfig: Path) -> None:
    await install_crds_and_examples(kubeconfig)
    code, output = await kubectl(kubeconfig, "apply", "-f", str(ROOT / "examples"))
    assert code == 0 and "unchanged" in output
    await kubectl(kubeconfig, "apply", "-f", "-", stdin=CONFIGMAP.format(level=1))
    code, output = await kubectl(kubeconfig, "apply", "-f", "-", stdin=CONFIGMAP.format(level=2))
    assert code == 0 and "configmap/settings configured" in output
    _, level = await kubectl(
        kubeconfig,
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].env[0].value}",
    )
    assert level == "2"


async def test_patch_and_invalid_patch_message(kubeconfig: Path) -> None:
    await install_crds_and_examples(kubeconfig)
    code, _ = await kubectl(
        kubeconfig, "patch", "ap", "demo", "--type=merge", "-p", '{"spec":{"maxAgents":7}}'
    )
    _, value = await kubectl(kubeconfig, "get", "ap", "demo", "-o", "jsonpath={.spec.maxAgents}")
    bad, message = await kubectl(
        kubeconfig, "patch", "ap", "demo", "--type=merge", "-p", '{"spec":{"minIdle":-1}}'
    )
    assert (code, value) == (0, "7")
    assert bad != 0
    assert 'The AgentPool "demo" is invalid: spec.minIdle' in message


async def test_delete_and_get_not_found(kubeconfig: Path) -> None:
    await install_crds_and_examples(kubeconfig)
    code, output = await kubectl(kubeconfig, "delete", "bs", "hello-test")
    missing, message = await kubectl(kubeconfig, "get", "bs", "hello-test")
    assert code == 0 and "deleted" in output
    assert missing != 0 and 'buildsteps.agentpool.dev "hello-test" not found' in message


async def test_get_watch_sees_new_objects(kubeconfig: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        str(KUBECTL),
        "--kubeconfig",
        str(kubeconfig),
        "get",
        "configmaps",
        "--watch",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    try:
        async with asyncio.timeout(DEADLINE):
            manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: watched}\n"
            code, output = await kubectl(kubeconfig, "apply", "-f", "-", stdin=manifest)
            assert code == 0, output
            seen = ""
            while "watched" not in seen:
                line = await process.stdout.readline()
                assert line, "kubectl get --watch ended early"
                seen = line.decode()
    finally:
        process.kill()
        await process.wait()
    assert seen.split()[0] == "watched"


async def test_explain_a_custom_resource_field(kubeconfig: Path) -> None:
    await install_crds_and_examples(kubeconfig)
    code, output = await kubectl(kubeconfig, "explain", "agentpools.spec.minIdle")
    assert code == 0 and "FIELD: minIdle <integer>" in output


async def test_imperative_create_sends_protobuf_that_the_sandbox_decodes(
    kubeconfig: Path,
) -> None:
    code, output = await kubectl(kubeconfig, "create", "namespace", "team")
    assert code == 0, output
    code, output = await kubectl(
        kubeconfig, "-n", "team", "create", "configmap", "settings", "--from-literal=a=b"
    )
    assert code == 0, output
    _, value = await kubectl(
        kubeconfig, "-n", "team", "get", "cm", "settings", "-o", "jsonpath={.data.a}"
    )
    assert value == "b"


async def test_unknown_field_is_rejected_with_strict_field_validation(kubeconfig: Path) -> None:
    await install_crds_and_examples(kubeconfig)
    manifest = (
        "apiVersion: agentpool.dev/v1alpha1\nkind: BuildStep\nmetadata: {name: typo}\n"
        "spec: {pool: demo, script: 'true', scirpt: 'x'}\n"
    )
    code, output = await kubectl(kubeconfig, "apply", "-f", "-", stdin=manifest)
    assert code != 0 and 'unknown field "spec.scirpt"' in output


async def test_unknown_field_in_a_builtin_is_rejected_like_kubernetes(kubeconfig: Path) -> None:
    manifest = (
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: typo}\n"
        "data: {level: debug}\ndatta: {level: info}\n"
    )

    code, output = await kubectl(kubeconfig, "apply", "-f", "-", stdin=manifest)

    assert code != 0
    assert 'ConfigMap in version "v1" cannot be handled as a ConfigMap' in output
    assert 'unknown field "datta"' in output


async def test_auth_can_i_and_whoami_answer_for_the_sandbox_user(kubeconfig: Path) -> None:
    code, output = await kubectl(kubeconfig, "auth", "can-i", "create", "pods")
    who_code, who = await kubectl(kubeconfig, "auth", "whoami")
    assert (code, output.strip()) == (0, "yes")
    assert who_code == 0 and "sandbox" in who


EVENT = """\
apiVersion: v1
kind: Event
metadata: {name: web.1, namespace: default}
involvedObject: {kind: Pod, name: web-0, namespace: default, fieldPath: "spec.containers{web}"}
type: Warning
reason: BackOff
message: "Back-off restarting failed container  "
source: {component: kubelet, host: sandbox-node}
firstTimestamp: "2026-01-01T00:00:00Z"
lastTimestamp: "2026-01-01T00:00:00Z"
count: 3
"""


async def test_get_events_prints_the_columns_of_the_real_server(kubeconfig: Path) -> None:
    created, message = await kubectl(kubeconfig, "create", "-f", "-", stdin=EVENT)

    code, output = await kubectl(kubeconfig, "get", "events")
    _, wide = await kubectl(kubeconfig, "get", "events", "-o", "wide")

    assert created == 0 and code == 0, message + output
    header, row = output.splitlines()
    assert header.split() == ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    assert row.split()[1:] == [
        "Warning", "BackOff", "pod/web-0", "Back-off", "restarting", "failed", "container"
    ]  # fmt: skip
    wide_header = wide.splitlines()[0]
    assert "SUBOBJECT" in wide_header and "FIRST SEEN" in wide_header
    assert "kubelet, sandbox-node" in wide and "spec.containers{web}" in wide
