"""kubectl's imperative commands for built-in kinds send protobuf bodies, with no JSON fallback."""

from __future__ import annotations

from conformance_cluster import Cluster


def test_create_namespace_imperatively(cluster: Cluster) -> None:
    out = cluster.ok("create", "namespace", "made-by-create")

    assert out == "namespace/made-by-create created\n"


def test_create_configmap_imperatively(cluster: Cluster, namespace: str) -> None:
    cluster.ok("create", "configmap", "settings", "-n", namespace, "--from-literal=level=debug")

    out = cluster.ok("get", "configmap", "settings", "-n", namespace, "-o=jsonpath={.data.level}")

    assert out == "debug"


def test_create_secret_imperatively(cluster: Cluster, namespace: str) -> None:
    cluster.ok("create", "secret", "generic", "token", "-n", namespace, "--from-literal=t=s3cret")

    out = cluster.ok("get", "secret", "token", "-n", namespace, "-o=jsonpath={.data.t}")

    assert out == "czNjcmV0"
