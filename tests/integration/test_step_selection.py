"""Steps can be selected by pool and build with kubectl (the CRD's selectableFields)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agentpool_sandbox.cluster import Sandbox

ROOT = Path(__file__).resolve().parents[2]
KUBECTL = Path(sys.executable).parent / "kubectl"

STEP = """\
apiVersion: agentpool.dev/v1alpha1
kind: BuildStep
metadata: {{name: {name}}}
spec: {{pool: {pool}, build: {build}, script: "make"}}
"""


@pytest.fixture
async def kubeconfig() -> AsyncIterator[Path]:
    async with Sandbox() as sandbox:
        yield sandbox.kubeconfig_path


async def kubectl(kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    process = await asyncio.create_subprocess_exec(
        str(KUBECTL),
        "--kubeconfig",
        str(kubeconfig),
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(60):
        output, _ = await process.communicate(stdin.encode() if stdin else None)
    assert process.returncode == 0, output.decode()
    return output.decode()


async def test_steps_are_selected_by_build_and_pool_with_field_selectors(
    kubeconfig: Path,
) -> None:
    await kubectl(kubeconfig, "apply", "-f", str(ROOT / "crds" / "buildsteps.yaml"))
    await kubectl(kubeconfig, "wait", "--for=condition=Established", "crd/buildsteps.agentpool.dev")
    steps = [("a1", "linux", "release"), ("a2", "linux", "nightly"), ("a3", "arm", "release")]
    manifest = "---\n".join(STEP.format(name=n, pool=p, build=b) for n, p, b in steps)
    await kubectl(kubeconfig, "apply", "-f", "-", stdin=manifest)

    release = await kubectl(
        kubeconfig, "get", "bs", "--field-selector", "spec.build=release", "-o", "name"
    )
    linux_release = await kubectl(
        kubeconfig,
        "get",
        "bs",
        "--field-selector",
        "spec.build=release,spec.pool=linux",
        "-o",
        "name",
    )

    assert release.split() == ["buildstep.agentpool.dev/a1", "buildstep.agentpool.dev/a3"]
    assert linux_release.split() == ["buildstep.agentpool.dev/a1"]
