"""The Grafana dashboard the chart ships as a ConfigMap for Grafana's dashboard sidecar."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
from chart_rendering import CHART_DIR, NAMESPACE, RELEASE, ROOT
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from agentpool_sandbox.cluster import Sandbox

Render = Callable[..., list[dict[str, Any]]]

DOCS_DASHBOARD = ROOT / "docs" / "grafana" / "agentpool-dashboard.json"
CHART_DASHBOARD = CHART_DIR / "dashboards" / "agentpool.json"
CONFIGMAP = f"{RELEASE}-agentpool-operator-dashboard"
ENABLED = {"grafanaDashboard": {"enabled": True}}


def configmaps(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == "ConfigMap"]


def test_chart_dashboard_is_a_byte_copy_of_the_documented_one() -> None:
    # Like `make crds-check` for the CRDs: edit docs/grafana/, then copy it into the chart.
    assert CHART_DASHBOARD.read_bytes() == DOCS_DASHBOARD.read_bytes()


def test_no_dashboard_configmap_by_default(render: Render) -> None:
    assert configmaps(render()) == []


def test_enabled_dashboard_is_a_configmap_the_sidecar_picks_up(render: Render) -> None:
    [configmap] = configmaps(render(ENABLED))

    labels = configmap["metadata"]["labels"]
    assert configmap["metadata"]["name"] == CONFIGMAP
    assert configmap["metadata"]["namespace"] == NAMESPACE
    assert labels["grafana_dashboard"] == "1"
    assert labels["app.kubernetes.io/instance"] == RELEASE
    assert "annotations" not in configmap["metadata"]
    assert configmap["data"] == {"agentpool.json": DOCS_DASHBOARD.read_text()}
    assert json.loads(configmap["data"]["agentpool.json"])["uid"] == "agentpool-operator"
    kubernetes_validate.validate(configmap, "1.37.0", strict=True)


def test_dashboard_namespace_labels_and_annotations_are_configurable(render: Render) -> None:
    values = {
        "grafanaDashboard": {
            "enabled": True,
            "namespace": "monitoring",
            "labels": {"grafana_dashboard": None, "dashboards": "ci"},
            "annotations": {"grafana_folder": "CI"},
        }
    }

    [configmap] = configmaps(render(values))

    metadata = configmap["metadata"]
    assert metadata["namespace"] == "monitoring"
    assert metadata["labels"]["dashboards"] == "ci"
    assert "grafana_dashboard" not in metadata["labels"]
    assert metadata["annotations"] == {"grafana_folder": "CI"}


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"grafanaDashboard": {"enable": True}}, "additional properties 'enable' not allowed"),
        ({"grafanaDashboard": {"enabled": True, "namespace": "Monitoring"}}, "namespace"),
        ({"grafanaDashboard": {"labels": {"grafana_dashboard": 1}}}, "labels"),
    ],
)
def test_schema_rejects_bad_dashboard_values(
    chart: helm.Chart, values: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(helm.HelmValuesError, match=re.escape(complaint)):
        chart.render(values=values, name=RELEASE, namespace=NAMESPACE)


@pytest.fixture
async def kubeconfig() -> AsyncIterator[Path]:
    async with Sandbox() as sandbox:
        yield Path(sandbox.kubeconfig_path)


def api_client(kubeconfig: Path) -> k8s.ApiClient:
    api: k8s.ApiClient = k8s_config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(kubeconfig)
    )
    return api


def create_namespaces(kubeconfig: Path, *names: str) -> None:
    with api_client(kubeconfig) as api:
        for name in names:
            namespace = k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name))
            k8s.CoreV1Api(api).create_namespace(namespace)


def read_configmap(kubeconfig: Path, name: str, namespace: str) -> dict[str, Any]:
    with api_client(kubeconfig) as api:
        found = k8s.CoreV1Api(api).read_namespaced_config_map(name, namespace)
        data: dict[str, Any] = api.sanitize_for_serialization(found)
    return data


async def test_helm_installs_the_dashboard_into_grafanas_namespace(kubeconfig: Path) -> None:
    values = {"grafanaDashboard": {"enabled": True, "namespace": "monitoring"}}
    await asyncio.to_thread(create_namespaces, kubeconfig, NAMESPACE, "monitoring")
    # Release records in memory: the chart's objects still go through the sandbox API.
    with helm.Config(
        kubeconfig_path=kubeconfig, namespace=NAMESPACE, storage_driver="memory"
    ) as config:
        await asyncio.to_thread(config.install, CHART_DIR, RELEASE, values, namespace=NAMESPACE)

    installed = await asyncio.to_thread(read_configmap, kubeconfig, CONFIGMAP, "monitoring")

    assert installed["data"] == {"agentpool.json": DOCS_DASHBOARD.read_text()}
    assert installed["metadata"]["labels"]["grafana_dashboard"] == "1"
