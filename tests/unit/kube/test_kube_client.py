"""Client construction: configuration sources, User-Agent, connection limit."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from agentpool import USER_AGENT
from agentpool.kube import client as kube
from agentpool.kube.exec import ExecApiClient


def write_kubeconfig(path: Path, server: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": {"token": "secret-token"}}],
                "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "ctx",
            }
        )
    )
    return path


async def test_connect_reads_the_kubeconfig_and_identifies_the_operator(tmp_path: Path) -> None:
    kubeconfig = write_kubeconfig(tmp_path / "config", "http://127.0.0.1:6443")
    clients = await kube.connect(str(kubeconfig), connection_limit=64)
    try:
        assert clients.api.configuration.host == "http://127.0.0.1:6443"
        assert clients.exec.configuration is clients.api.configuration
        assert isinstance(clients.exec, ExecApiClient)
        assert clients.api.user_agent == clients.exec.user_agent == USER_AGENT
        assert clients.api.configuration.api_key["BearerToken"] == "Bearer secret-token"
        assert clients.api.rest_client.pool_manager.connector.limit == 64
    finally:
        await clients.close()


async def test_in_cluster_is_used_without_a_kubeconfig(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token, ca = tmp_path / "token", tmp_path / "ca.crt"
    token.write_text("in-cluster-token")
    ca.write_text("not checked until a request is made")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    monkeypatch.setattr(
        "kubernetes_asyncio.config.incluster_config.SERVICE_TOKEN_FILENAME", str(token)
    )
    monkeypatch.setattr("kubernetes_asyncio.config.incluster_config.SERVICE_CERT_FILENAME", str(ca))
    configuration = await kube.load_configuration()
    assert configuration.host == "https://10.0.0.1:443"
