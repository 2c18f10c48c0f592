"""Pool test helpers: AgentPool bodies and a `pools` fixture that creates and edits them.

Agent containers have no command: the sandbox then runs no process for them, and the
kubelet profile alone drives their status, which is all the pool lifecycle looks at.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from kubernetes_asyncio.client import ApiClient, CoreV1Api, CustomObjectsApi

from agentpool.kube import client as kube

NAMESPACE = "default"
PROFILE_ANNOTATION = "sandbox.agentpool.dev/profile"


def pool_body(name: str, *, profile: str = "standard", **spec: Any) -> dict[str, Any]:
    """An AgentPool named `name` whose agents follow the kubelet `profile`; `spec` overrides."""
    body: dict[str, Any] = {
        "apiVersion": f"{kube.GROUP}/{kube.VERSION}",
        "kind": "AgentPool",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "template": {
                "metadata": {"annotations": {PROFILE_ANNOTATION: profile}},
                "spec": {"containers": [{"name": "agent", "image": "busybox:1.36"}]},
            },
            "agentContainer": "agent",
            "minIdle": 1,
            "maxAgents": 5,
        },
    }
    body["spec"].update(spec)
    return body


class Pools:
    """Creates, edits and deletes AgentPools and agent pods with the test's client."""

    def __init__(self, api: ApiClient) -> None:
        self._objects = CustomObjectsApi(api)
        self._core = CoreV1Api(api)

    async def create(self, name: str, *, profile: str = "standard", **spec: Any) -> dict[str, Any]:
        return await self.create_body(pool_body(name, profile=profile, **spec))

    async def create_body(self, body: dict[str, Any]) -> dict[str, Any]:
        created: dict[str, Any] = await self._objects.create_namespaced_custom_object(
            kube.GROUP, kube.VERSION, NAMESPACE, kube.AGENTPOOLS, copy.deepcopy(body)
        )
        return created

    async def patch_spec(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        """Merge-patch the pool's spec (a new generation)."""
        patched: dict[str, Any] = await self._objects.patch_namespaced_custom_object(
            kube.GROUP,
            kube.VERSION,
            NAMESPACE,
            kube.AGENTPOOLS,
            name,
            {"spec": spec},
            _content_type="application/merge-patch+json",
        )
        return patched

    async def delete_pod(self, name: str) -> None:
        await self._core.delete_namespaced_pod(name, NAMESPACE, grace_period_seconds=0)


@pytest.fixture
def pools(kube_api: ApiClient) -> Pools:
    return Pools(kube_api)
