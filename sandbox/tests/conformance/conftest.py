"""Fixtures: one sandbox cluster for the session, the CRDs applied, a namespace per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from conformance_cluster import ROOT, Cluster, SandboxThread, find_kubectl


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    sandbox = SandboxThread(tmp_path_factory.mktemp("sandbox"))
    sandbox.start()
    try:
        yield Cluster(url=sandbox.url, kubeconfig=sandbox.kubeconfig, kubectl_path=find_kubectl())
    finally:
        sandbox.stop()


@pytest.fixture(scope="session")
def crds(cluster: Cluster) -> Cluster:
    """The cluster with both CRDs applied and established."""
    cluster.ok("apply", "-f", str(ROOT / "crds"))
    cluster.ok(
        "wait",
        "--for=condition=Established",
        "--timeout=30s",
        "crd/agentpools.agentpool.dev",
        "crd/buildsteps.agentpool.dev",
    )
    return cluster


@pytest.fixture
def namespace(cluster: Cluster) -> str:
    """A fresh namespace per test, so tests do not see each other's objects."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    cluster.ok(
        "apply", "-f", "-", input=f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}}}\n"
    )
    return name
