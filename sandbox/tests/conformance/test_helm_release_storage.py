"""Helm v4 with its default storage driver: release records are Secrets in the sandbox."""

from __future__ import annotations

import json
from pathlib import Path

import helm_python as helm
from conformance_cluster import Cluster

CHART = """\
apiVersion: v2
name: tiny
version: 0.1.0
"""
CONFIGMAP = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-settings
data:
  level: {{ .Values.level | quote }}
"""


def release_secrets(cluster: Cluster, namespace: str) -> dict[str, str]:
    """Release secret name → the status label Helm keeps on it."""
    listed = json.loads(
        cluster.ok("get", "secrets", "-n", namespace, "-l", "owner=helm", "-o", "json")
    )
    return {s["metadata"]["name"]: s["metadata"]["labels"]["status"] for s in listed["items"]}


def test_install_upgrade_and_uninstall_keep_release_secrets(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    (tmp_path / "templates").mkdir()
    (tmp_path / "Chart.yaml").write_text(CHART)
    (tmp_path / "values.yaml").write_text("level: info\n")
    (tmp_path / "templates" / "configmap.yaml").write_text(CONFIGMAP)
    level = ["get", "configmap", "rel-settings", "-n", namespace, "-o=jsonpath={.data.level}"]

    with helm.Config(kubeconfig_path=cluster.kubeconfig, namespace=namespace) as config:
        config.install(tmp_path, "rel", {}, namespace=namespace)
        config.upgrade(tmp_path, "rel", {"level": "debug"}, namespace=namespace)
        after_upgrade = (release_secrets(cluster, namespace), cluster.ok(*level))
        config.uninstall("rel")

    assert after_upgrade == (
        {"sh.helm.release.v1.rel.v1": "superseded", "sh.helm.release.v1.rel.v2": "deployed"},
        "debug",
    )
    assert release_secrets(cluster, namespace) == {}
