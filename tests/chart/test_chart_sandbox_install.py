"""The chart installed into the sandbox cluster: by kubectl apply, and by the real Helm engine."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import helm_python as helm
import pytest
import yaml
from chart_commands import succeed
from chart_rendering import CHART_DIR, NAMESPACE, RELEASE, ROOT, render_objects
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from agentpool_sandbox.cluster import Sandbox

KUBECTL = str(Path(sys.executable).with_name("kubectl"))
FULLNAME = f"{RELEASE}-agentpool-operator"
WATCHED = ["team-a", "team-b"]
T = TypeVar("T")


@pytest.fixture
async def kubeconfig() -> AsyncIterator[Path]:
    async with Sandbox() as sandbox:
        yield Path(sandbox.kubeconfig_path)


async def blocking(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a blocking client call off the event loop that serves the sandbox."""
    return await asyncio.to_thread(function, *args, **kwargs)


def kubectl(kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    argv = [KUBECTL, "--kubeconfig", str(kubeconfig), *args]
    return succeed(argv, what=f"kubectl {' '.join(args)}", stdin=stdin)


def create_namespaces(kubeconfig: Path, namespaces: list[str]) -> None:
    manifests = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}} for n in namespaces
    ]
    kubectl(kubeconfig, "apply", "-f", "-", stdin=yaml.safe_dump_all(manifests))


def api_client(kubeconfig: Path) -> k8s.ApiClient:
    api: k8s.ApiClient = k8s_config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(kubeconfig)
    )
    return api


async def fetch(api: k8s.ApiClient, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call the official client off the event loop; answer with the object as plain JSON data."""
    result = await blocking(method, *args, **kwargs)
    return api.sanitize_for_serialization(result)  # type: ignore[no-untyped-call]


def names(listing: dict[str, Any]) -> list[str]:
    return sorted(item["metadata"]["name"] for item in listing["items"])


async def test_kubectl_apply_of_the_rendered_chart_in_namespaced_mode(kubeconfig: Path) -> None:
    with helm.Chart.load(CHART_DIR) as chart:
        objects = render_objects(chart, {"watchNamespaces": WATCHED})
    rendered_role = next(o for o in objects if o["kind"] == "Role")
    await blocking(create_namespaces, kubeconfig, [NAMESPACE, *WATCHED])
    await blocking(kubectl, kubeconfig, "apply", "--server-side", "-f", str(CHART_DIR / "crds"))

    applied = await blocking(
        kubectl, kubeconfig, "apply", "-f", "-", stdin=yaml.safe_dump_all(objects)
    )

    assert applied.count(" created") == len(objects)
    pool = yaml.safe_load((ROOT / "examples" / "agentpool.yaml").read_text())
    with api_client(kubeconfig) as api:
        deployment = await fetch(
            api, k8s.AppsV1Api(api).read_namespaced_deployment, FULLNAME, NAMESPACE
        )
        role = await fetch(
            api, k8s.RbacAuthorizationV1Api(api).read_namespaced_role, FULLNAME, "team-b"
        )
        created = await fetch(
            api,
            k8s.CustomObjectsApi(api).create_namespaced_custom_object,
            "agentpool.dev",
            "v1alpha1",
            "team-a",
            "agentpools",
            pool,
        )
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][:2] == ["--namespace=team-a", "--namespace=team-b"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert deployment["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE
    assert role["rules"] == rendered_role["rules"]
    assert created["metadata"]["uid"]


async def test_helm_installs_upgrades_and_uninstalls_the_chart(kubeconfig: Path) -> None:
    await blocking(create_namespaces, kubeconfig, [NAMESPACE, *WATCHED])
    selector = f"app.kubernetes.io/instance={RELEASE}"
    # Helm keeps its release records as Secrets in the sandbox, as on a real cluster.
    with (
        helm.Config(kubeconfig_path=kubeconfig, namespace=NAMESPACE) as config,
        api_client(kubeconfig) as api,
    ):
        rbac = k8s.RbacAuthorizationV1Api(api)
        crd_api = k8s.ApiextensionsV1Api(api)

        installed = await blocking(config.install, CHART_DIR, RELEASE, {}, namespace=NAMESPACE)
        cluster_roles = await fetch(api, rbac.list_cluster_role, label_selector=selector)
        crds = await fetch(api, crd_api.list_custom_resource_definition)

        await blocking(
            config.upgrade, CHART_DIR, RELEASE, {"watchNamespaces": WATCHED}, namespace=NAMESPACE
        )
        roles = await fetch(api, rbac.list_role_for_all_namespaces, label_selector=selector)
        upgraded_cluster_roles = await fetch(api, rbac.list_cluster_role, label_selector=selector)

        await blocking(config.uninstall, RELEASE)
        deployments = await fetch(
            api, k8s.AppsV1Api(api).list_namespaced_deployment, NAMESPACE, label_selector=selector
        )
        crds_after = await fetch(api, crd_api.list_custom_resource_definition)

    assert installed["status"] == "deployed"
    users = [f"{FULLNAME}-{role}" for role in ("admin", "edit", "view")]
    assert names(cluster_roles) == [FULLNAME, *users]
    assert names(crds) == ["agentpools.agentpool.dev", "buildsteps.agentpool.dev"]
    assert sorted(r["metadata"]["namespace"] for r in roles["items"]) == WATCHED
    assert names(upgraded_cluster_roles) == sorted([f"{FULLNAME}-cluster", *users])
    assert deployments["items"] == []
    # Helm never deletes CRDs, so no AgentPool or BuildStep is lost by uninstalling.
    assert names(crds_after) == names(crds)
