"""The kubectl commands docs/install.md tells users to run, run verbatim against the sandbox.

Helm's own steps (install, upgrade, uninstall) are covered by test_chart_sandbox_install.py
through the embedded Helm engine; this covers the kubectl around them: CRD upgrades, the
examples, uninstalling, the Pod Security label and the Argo CD ConfigMap patch.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_commands import succeed
from chart_rendering import ROOT

from agentpool_sandbox.cluster import Sandbox

INSTALL_DOC = (ROOT / "docs" / "install.md").read_text()
KUBECTL_DIR = str(Path(sys.executable).parent)


@pytest.fixture
async def kubeconfig() -> AsyncIterator[Path]:
    async with Sandbox() as sandbox:
        yield Path(sandbox.kubeconfig_path)


def documented(command: str) -> str:
    """`command` exactly as install.md prints it, so the test and the page cannot drift apart."""
    assert command in INSTALL_DOC, f"install.md no longer documents: {command}"
    return command


async def run(kubeconfig: Path, command: str, stdin: str | None = None) -> str:
    """Run a shell command line from the repository root, with the venv's kubectl first."""
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "PATH": f"{KUBECTL_DIR}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    argv = shlex.split(command, comments=True)
    return await asyncio.to_thread(succeed, argv, what=command, stdin=stdin, env=env, cwd=ROOT)


async def test_crd_upgrade_examples_and_uninstall_commands(kubeconfig: Path) -> None:
    apply_crds = documented(
        "kubectl apply --server-side --force-conflicts -f charts/agentpool-operator/crds/"
    )
    await run(kubeconfig, apply_crds)

    upgraded = await run(kubeconfig, apply_crds)
    await run(kubeconfig, documented("kubectl apply -f examples/"))
    listed = await run(kubeconfig, "kubectl get agentpools,buildsteps -o name")
    by_category = await run(kubeconfig, "kubectl get ci -o name")
    await run(kubeconfig, documented("kubectl delete buildsteps,agentpools --all -A --wait"))
    left = await run(kubeconfig, "kubectl get agentpools,buildsteps -A -o name")
    await run(kubeconfig, documented("kubectl delete -f charts/agentpool-operator/crds/"))
    crds = await run(kubeconfig, "kubectl get crd -o name")

    assert upgraded.count("serverside-applied") == 2
    assert "agentpool.agentpool.dev/demo" in listed
    assert sorted(listed.split()) == sorted(by_category.split())
    assert left.strip() == ""
    assert "agentpool.dev" not in crds


async def test_pod_security_label_command(kubeconfig: Path) -> None:
    await run(kubeconfig, "kubectl create namespace agentpool-system")

    await run(
        kubeconfig,
        documented(
            "kubectl label namespace agentpool-system pod-security.kubernetes.io/enforce=restricted"
        ),
    )

    labels = await run(
        kubeconfig, "kubectl get namespace agentpool-system -o jsonpath={.metadata.labels}"
    )
    assert '"pod-security.kubernetes.io/enforce":"restricted"' in labels


async def test_argocd_configmap_patch_keeps_the_other_keys(kubeconfig: Path) -> None:
    existing: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "argocd-cm", "namespace": "argocd"},
        "data": {"url": "https://argocd.example.com"},
    }
    await run(kubeconfig, "kubectl create namespace argocd")
    await run(kubeconfig, "kubectl apply -f -", stdin=yaml.safe_dump(existing))

    await run(
        kubeconfig,
        documented(
            "kubectl -n argocd patch configmap argocd-cm --type merge "
            "--patch-file docs/argocd/argocd-cm.yaml"
        ),
    )

    patched = yaml.safe_load(await run(kubeconfig, "kubectl -n argocd get cm argocd-cm -o yaml"))
    shipped = yaml.safe_load((ROOT / "docs" / "argocd" / "argocd-cm.yaml").read_text())
    assert patched["data"] == {**existing["data"], **shipped["data"]}
