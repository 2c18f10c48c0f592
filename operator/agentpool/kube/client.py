"""The operator's Kubernetes API clients (kubernetes_asyncio) and the few calls it makes.

Every request carries the User-Agent ``agentpool-operator/<version>`` so that the
API server (and the sandbox's statistics) can tell the operator's traffic apart.
Callers hold a quota slot (``kube.quota``) around each call; these helpers do not.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from kubernetes_asyncio import config as kube_config
from kubernetes_asyncio.client import (
    ApiClient,
    Configuration,
    CoreV1Api,
    CustomObjectsApi,
    V1DeleteOptions,
    V1Preconditions,
)
from kubernetes_asyncio.client.exceptions import ApiException

from agentpool import USER_AGENT
from agentpool.kube.exec import ExecApiClient

__all__ = [
    "AGENTPOOLS",
    "BUILDSTEPS",
    "GROUP",
    "VERSION",
    "KubeClients",
    "connect",
    "create_pod",
    "delete_object",
    "delete_pod",
    "get_object",
    "list_objects",
    "list_pods",
    "load_configuration",
    "new_api_client",
    "new_exec_client",
    "patch_status",
    "read_pod",
]

GROUP: Final = "agentpool.dev"
VERSION: Final = "v1alpha1"
AGENTPOOLS: Final = "agentpools"
BUILDSTEPS: Final = "buildsteps"

# The per-pool quotas are the real limit on concurrent connections. aiohttp's
# own connector limit must stay above their sum, or requests would queue inside
# aiohttp where nobody can see them (the very failure of the seed's plugin).
DEFAULT_CONNECTION_LIMIT: Final = 1024

MERGE_PATCH: Final = "application/merge-patch+json"


async def load_configuration(
    kubeconfig: str | None = None, *, context: str | None = None
) -> Configuration:
    """Configuration from ``kubeconfig``, else in-cluster, else the default kubeconfig."""
    configuration = Configuration()
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        kube_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    else:
        await kube_config.load_kube_config(
            config_file=kubeconfig, context=context, client_configuration=configuration
        )
    return configuration


_C = TypeVar("_C", bound=ApiClient)


def _identified(kind: type[_C], configuration: Configuration, connection_limit: int) -> _C:
    configuration.connection_pool_maxsize = connection_limit
    api = kind(configuration)
    api.user_agent = USER_AGENT
    return api


def new_api_client(
    configuration: Configuration, *, connection_limit: int = DEFAULT_CONNECTION_LIMIT
) -> ApiClient:
    """An ApiClient for ordinary requests, identified by the operator's User-Agent."""
    return _identified(ApiClient, configuration, connection_limit)


def new_exec_client(
    configuration: Configuration, *, connection_limit: int = DEFAULT_CONNECTION_LIMIT
) -> ExecApiClient:
    """The WebSocket client for exec sessions, sharing the same configuration."""
    return _identified(ExecApiClient, configuration, connection_limit)


@dataclass(frozen=True)
class KubeClients:
    """The two clients the operator uses: requests and exec WebSockets."""

    api: ApiClient
    exec: ExecApiClient

    async def close(self) -> None:
        await self.exec.close()
        await self.api.close()


async def connect(
    kubeconfig: str | None = None,
    *,
    context: str | None = None,
    connection_limit: int = DEFAULT_CONNECTION_LIMIT,
) -> KubeClients:
    """Both clients for the cluster that ``load_configuration`` finds."""
    configuration = await load_configuration(kubeconfig, context=context)
    return KubeClients(
        api=new_api_client(configuration, connection_limit=connection_limit),
        exec=new_exec_client(configuration, connection_limit=connection_limit),
    )


async def get_object(api: ApiClient, plural: str, namespace: str, name: str) -> dict[str, Any]:
    """One AgentPool or BuildStep (``plural`` is AGENTPOOLS or BUILDSTEPS) as a dict."""
    result: dict[str, Any] = await CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, plural, name
    )
    return result


async def list_objects(
    api: ApiClient, plural: str, namespace: str, *, label_selector: str | None = None
) -> list[dict[str, Any]]:
    """AgentPools or BuildSteps of a namespace, optionally filtered by labels."""
    result: dict[str, Any] = await CustomObjectsApi(api).list_namespaced_custom_object(
        GROUP, VERSION, namespace, plural, label_selector=label_selector or ""
    )
    items: list[dict[str, Any]] = result.get("items", [])
    return items


async def patch_status(
    api: ApiClient, plural: str, namespace: str, name: str, status: Mapping[str, Any]
) -> dict[str, Any]:
    """Merge-patch the status subresource (keys set to None are removed)."""
    # Without an explicit content type the generated client sends a dict as a
    # JSON patch; the stub does not declare `_content_type`, hence Any.
    patch: Any = CustomObjectsApi(api).patch_namespaced_custom_object_status
    result: dict[str, Any] = await patch(
        GROUP,
        VERSION,
        namespace,
        plural,
        name,
        {"status": dict(status)},
        _content_type=MERGE_PATCH,
    )
    return result


def _as_dict(api: ApiClient, model: Any) -> dict[str, Any]:
    # Models serialise back to the API's own camelCase JSON shape.
    data: dict[str, Any] = api.sanitize_for_serialization(model)
    return data


async def create_pod(api: ApiClient, namespace: str, manifest: Mapping[str, Any]) -> dict[str, Any]:
    """Create a pod from a manifest dict; returns the created pod as a dict."""
    # The generated client sends a plain dict body as is.
    create: Any = CoreV1Api(api).create_namespaced_pod
    pod = await create(namespace, dict(manifest))
    return _as_dict(api, pod)


async def delete_pod(
    api: ApiClient, namespace: str, name: str, *, grace_period_seconds: int | None = None
) -> bool:
    """Delete a pod; False when it was already gone."""
    core = CoreV1Api(api)
    try:
        if grace_period_seconds is None:
            await core.delete_namespaced_pod(name, namespace)
        else:
            await core.delete_namespaced_pod(
                name, namespace, grace_period_seconds=grace_period_seconds
            )
    except ApiException as error:
        if error.status == 404:
            return False
        raise
    return True


async def list_pods(api: ApiClient, namespace: str, label_selector: str) -> list[dict[str, Any]]:
    """Pods of a namespace matching a label selector, as dicts."""
    pods = await CoreV1Api(api).list_namespaced_pod(namespace, label_selector=label_selector)
    return [_as_dict(api, pod) for pod in pods.items]


async def read_pod(api: ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    """One pod as a dict; None when it does not exist (404)."""
    try:
        pod = await CoreV1Api(api).read_namespaced_pod(name, namespace)
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    return _as_dict(api, pod)


async def delete_object(
    api: ApiClient, plural: str, namespace: str, name: str, *, uid: str | None = None
) -> None:
    """Delete an AgentPool or BuildStep; with `uid`, only if the object still has that uid
    (409 Conflict otherwise), so an object re-created under the same name is left alone."""
    options = V1DeleteOptions(preconditions=V1Preconditions(uid=uid) if uid else None)
    await CustomObjectsApi(api).delete_namespaced_custom_object(
        GROUP, VERSION, namespace, plural, name, body=options
    )
