"""Real client libraries against the sandbox: kubernetes_asyncio (list/watch) and kopf."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml
from kubernetes_asyncio import client, config, watch

from agentpool_sandbox.cluster import Sandbox
from agentpool_sandbox.kubeconfig import TOKEN

ROOT = Path(__file__).resolve().parents[3]
POOLS = "agentpools.agentpool.dev"
DEADLINE = 30.0


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox(bookmark_interval=0.2) as sandbox:
        for path in sorted((ROOT / "crds").glob("*.yaml")):
            sandbox.store.create(
                "customresourcedefinitions.apiextensions.k8s.io",
                None,
                yaml.safe_load(path.read_text()),
            )
        yield sandbox


@pytest.fixture
async def api(sandbox: Sandbox) -> AsyncIterator[client.ApiClient]:
    configuration = client.Configuration()
    await config.load_kube_config(str(sandbox.kubeconfig_path), client_configuration=configuration)
    async with client.ApiClient(configuration) as api_client:
        yield api_client


def pool(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "agentpool.dev/v1alpha1",
        "kind": "AgentPool",
        "metadata": {"name": name},
        "spec": {"template": {"spec": {"containers": [{"name": "a", "image": "busybox"}]}}},
    }


async def test_kubernetes_asyncio_lists_then_watches_from_the_list_version(
    api: client.ApiClient,
) -> None:
    core = client.CoreV1Api(api)
    await core.create_namespaced_config_map(
        "default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="a"))
    )
    listed = await core.list_namespaced_config_map("default")
    stream = watch.Watch().stream(
        core.list_namespaced_config_map,
        "default",
        resource_version=listed.metadata.resource_version,
        timeout_seconds=10,
    )
    await core.create_namespaced_config_map(
        "default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="b"))
    )
    async with asyncio.timeout(DEADLINE):
        event = await anext(stream)
    assert [i.metadata.name for i in listed.items] == ["a"]
    assert (event["type"], event["object"].metadata.name) == ("ADDED", "b")


async def test_kubernetes_asyncio_custom_objects_and_typed_errors(api: client.ApiClient) -> None:
    custom = client.CustomObjectsApi(api)
    await custom.create_namespaced_custom_object(
        "agentpool.dev", "v1alpha1", "default", "agentpools", pool("a")
    )
    with pytest.raises(client.ApiException) as info:
        await custom.create_namespaced_custom_object(
            "agentpool.dev", "v1alpha1", "default", "agentpools", pool("a")
        )
    assert info.value.status == 409


async def test_kopf_runs_handlers_with_finalizers_and_status_patches(sandbox: Sandbox) -> None:
    registry = kopf.OperatorRegistry()
    deleted = asyncio.Event()

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=sandbox.url, token=TOKEN, scheme="Bearer")

    @kopf.on.create("agentpool.dev", "v1alpha1", "agentpools", id="create", registry=registry)
    def created(patch: kopf.Patch, **_: Any) -> None:
        patch.status["observedGeneration"] = 1

    @kopf.on.delete("agentpool.dev", "v1alpha1", "agentpools", id="delete", registry=registry)
    def removed(**_: Any) -> None:
        deleted.set()

    settings = kopf.OperatorSettings()
    settings.watching.server_timeout = 5
    settings.posting.enabled = False
    stop, ready = asyncio.Event(), asyncio.Event()
    logging.getLogger("kopf").setLevel(logging.WARNING)
    operator = asyncio.create_task(
        kopf.operator(
            registry=registry,
            settings=settings,
            standalone=True,
            namespaces=["default"],
            stop_flag=stop,
            ready_flag=ready,
        )
    )
    try:
        async with asyncio.timeout(DEADLINE):
            await ready.wait()
            sandbox.store.create(POOLS, "default", pool("a"))
            events = sandbox.store.subscribe(POOLS, "default")
            async for _, obj in events:
                if obj.get("status", {}).get("observedGeneration") == 1:
                    break
            await events.aclose()
            finalizers = sandbox.store.get(POOLS, "default", "a")["metadata"]["finalizers"]
            sandbox.store.delete(POOLS, "default", "a")
            await deleted.wait()
            events = sandbox.store.subscribe(POOLS, "default")
            if sandbox.store.list(POOLS, "default")[0]:
                async for kind, _ in events:
                    if kind == "DELETED":
                        break
            await events.aclose()
    finally:
        stop.set()
        await operator
    assert finalizers == ["kopf.zalando.org/KopfFinalizerMarker"]
    assert sandbox.store.list(POOLS, "default")[0] == []
