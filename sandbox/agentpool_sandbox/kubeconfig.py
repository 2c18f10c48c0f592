"""The kubeconfig clients use to reach the sandbox."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

CONTEXT = "sandbox"
# Any bearer token is accepted; a fixed one keeps clients that insist on credentials happy.
TOKEN = "sandbox-token"


def build(url: str, namespace: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CONTEXT, "cluster": {"server": url}}],
        "users": [{"name": CONTEXT, "user": {"token": TOKEN}}],
        "contexts": [
            {
                "name": CONTEXT,
                "context": {"cluster": CONTEXT, "user": CONTEXT, "namespace": namespace},
            }
        ],
        "current-context": CONTEXT,
        "preferences": {},
    }


def write(path: Path, url: str, namespace: str = "default") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(build(url, namespace), sort_keys=False))
    path.chmod(0o600)
    return path
