"""Installing the project's CRDs into a sandbox, as a test user (imported by the shared
conftest and by tests that build their own sandbox)."""

from __future__ import annotations

from pathlib import Path

import yaml
from kubernetes_asyncio.client import ApiextensionsV1Api

from agentpool.kube import client as kube

CRDS = Path(__file__).parents[2] / "crds"
# Requests of the tests themselves; the sandbox's stats keep them apart from the operator's.
TEST_USER_AGENT = "agentpool-tests"


async def install_crds(kubeconfig_path: Path) -> None:
    """Create every CRD in crds/ (the caller waits for what it needs)."""
    api = kube.new_api_client(await kube.load_configuration(str(kubeconfig_path)))
    api.user_agent = TEST_USER_AGENT  # installing the CRDs is not the operator's doing
    try:
        extensions = ApiextensionsV1Api(api)
        for path in sorted(CRDS.glob("*.yaml")):
            await extensions.create_custom_resource_definition(yaml.safe_load(path.read_text()))
    finally:
        await api.close()
