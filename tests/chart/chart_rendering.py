"""Render the Helm chart with the real Helm v4 engine (helm-python-sdk) into plain objects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = ROOT / "charts" / "agentpool-operator"
RELEASE = "ap"
NAMESPACE = "agentpool-system"


def render_objects(
    chart: helm.Chart,
    values: dict[str, Any] | None = None,
    *,
    name: str = RELEASE,
    namespace: str = NAMESPACE,
) -> list[dict[str, Any]]:
    """Every object of every rendered template, NOTES.txt excluded, in template path order."""
    manifests = chart.render(values=values, name=name, namespace=namespace, is_install=True)
    objects: list[dict[str, Any]] = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects
