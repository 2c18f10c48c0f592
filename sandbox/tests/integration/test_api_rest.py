"""The sandbox API over HTTP: discovery, CRUD, Status errors, Tables and subresources."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from agentpool_sandbox.cluster import Sandbox
from agentpool_sandbox.protobuf import fields as protobuf_fields

ROOT = Path(__file__).resolve().parents[3]
POOLS = "/apis/agentpool.dev/v1alpha1/namespaces/default/agentpools"
PODS = "/api/v1/namespaces/default/pods"
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with Sandbox() as sandbox:
        headers = {"Authorization": "Bearer anything"}
        async with aiohttp.ClientSession(sandbox.url, headers=headers) as session:
            for path in sorted((ROOT / "crds").glob("*.yaml")):
                crd = yaml.safe_load(path.read_text())
                async with session.post(
                    "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=crd
                ) as response:
                    assert response.status == 201
            yield session


def pool(name: str, **spec: Any) -> dict[str, Any]:
    template = {"spec": {"containers": [{"name": "agent", "image": "busybox"}]}}
    return {
        "apiVersion": "agentpool.dev/v1alpha1",
        "kind": "AgentPool",
        "metadata": {"name": name},
        "spec": {"template": template, **spec},
    }


async def call(
    http: aiohttp.ClientSession, method: str, path: str, **kwargs: Any
) -> tuple[int, Any]:
    async with http.request(method, path, **kwargs) as response:
        assert response.content_type == "application/json"
        return response.status, await response.json()


async def test_version_and_health(http: aiohttp.ClientSession) -> None:
    status, version = await call(http, "GET", "/version")
    async with http.get("/readyz") as response:
        ready = await response.text()
    assert (status, version["major"], ready) == (200, "1", "ok")


OPENAPI_V2_PROTOBUF = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
# What client-go's OpenAPISchema() asks for; the answer carries the spelling above.
OPENAPI_V2_PROTOBUF_AT = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"


@pytest.mark.parametrize(
    "accept", [OPENAPI_V2_PROTOBUF_AT, OPENAPI_V2_PROTOBUF, f"{OPENAPI_V2_PROTOBUF_AT}, */*"]
)
async def test_openapi_v2_as_gnostic_protobuf(http: aiohttp.ClientSession, accept: str) -> None:
    async with http.get("/openapi/v2", headers={"Accept": accept}) as response:
        body = await response.read()
        content_type = response.headers["Content-Type"]

    fields = dict(protobuf_fields(body))  # openapi.v2.Document
    assert (response.status, content_type) == (200, OPENAPI_V2_PROTOBUF)
    assert fields[1] == b"2.0"  # swagger
    assert b"io.k8s.api.core.v1.Pod" in fields[9]  # definitions
    assert b"dev.agentpool.v1alpha1.AgentPool" in fields[9]


async def test_openapi_v2_without_json_or_protobuf_is_not_acceptable(
    http: aiohttp.ClientSession,
) -> None:
    status, body = await call(http, "GET", "/openapi/v2", headers={"Accept": "application/yaml"})

    assert (status, body["reason"]) == (406, "NotAcceptable")


@pytest.mark.parametrize(
    "accept", ["application/json, */*", f"{OPENAPI_V2_PROTOBUF};q=0.5, application/json", ""]
)
async def test_openapi_v2_is_json_when_json_is_preferred(
    http: aiohttp.ClientSession, accept: str
) -> None:
    status, body = await call(http, "GET", "/openapi/v2", headers={"Accept": accept})

    assert (status, body["swagger"]) == (200, "2.0")


async def test_core_discovery_lists_pods_with_subresources(http: aiohttp.ClientSession) -> None:
    _, versions = await call(http, "GET", "/api")
    _, resources = await call(http, "GET", "/api/v1")
    by_name = {r["name"]: r for r in resources["resources"]}
    assert versions["versions"] == ["v1"]
    assert by_name["pods"]["shortNames"] == ["po"] and by_name["pods"]["namespaced"]
    assert {"pods/status", "pods/exec", "pods/log"} <= set(by_name)
    assert "watch" in by_name["configmaps"]["verbs"]


async def test_crd_appears_in_group_discovery(http: aiohttp.ClientSession) -> None:
    _, groups = await call(http, "GET", "/apis")
    _, resources = await call(http, "GET", "/apis/agentpool.dev/v1alpha1")
    pools = next(r for r in resources["resources"] if r["name"] == "agentpools")
    assert "agentpool.dev" in [g["name"] for g in groups["groups"]]
    assert (pools["kind"], pools["shortNames"], pools["categories"]) == (
        "AgentPool",
        ["ap"],
        ["ci"],
    )


async def test_aggregated_discovery_request_gets_plain_json(http: aiohttp.ClientSession) -> None:
    accept = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    status, body = await call(http, "GET", "/apis", headers={"Accept": accept})
    assert (status, body["kind"]) == (200, "APIGroupList")


async def test_create_then_get_round_trip(http: aiohttp.ClientSession) -> None:
    status, created = await call(http, "POST", POOLS, json=pool("a"))
    _, fetched = await call(http, "GET", f"{POOLS}/a")
    assert status == 201
    assert fetched["metadata"]["uid"] == created["metadata"]["uid"]
    assert fetched["spec"]["maxAgents"] == 10  # schema default


async def test_invalid_object_answers_422_status(http: aiohttp.ClientSession) -> None:
    status, body = await call(http, "POST", POOLS, json=pool("bad", minIdle=-1))
    assert (status, body["kind"], body["reason"]) == (422, "Status", "Invalid")
    assert body["details"]["causes"][0]["field"] == "spec.minIdle"


async def test_conflict_and_not_found_statuses(http: aiohttp.ClientSession) -> None:
    _, created = await call(http, "POST", POOLS, json=pool("a"))
    await call(http, "POST", POOLS, json=pool("a"))
    duplicate, _ = await call(http, "POST", POOLS, json=pool("a"))
    stale = {**created, "spec": {**created["spec"], "maxAgents": 3}}
    created["metadata"]["resourceVersion"] = "1"
    stale["metadata"] = created["metadata"]
    conflict, body = await call(http, "PUT", f"{POOLS}/a", json=stale)
    missing, _ = await call(http, "GET", f"{POOLS}/nope")
    assert (duplicate, conflict, missing) == (409, 409, 404)
    assert body["reason"] == "Conflict"


async def test_namespace_in_body_must_match_url(http: aiohttp.ClientSession) -> None:
    obj = pool("a")
    obj["metadata"]["namespace"] = "kube-system"
    status, _ = await call(http, "POST", POOLS, json=obj)
    assert status == 400


async def test_status_subresource_patch(http: aiohttp.ClientSession) -> None:
    await call(http, "POST", POOLS, json=pool("a"))
    headers = {"Content-Type": "application/merge-patch+json"}
    _, patched = await call(
        http,
        "PATCH",
        f"{POOLS}/a/status",
        data=b'{"status":{"observedGeneration":1},"spec":{"maxAgents":1}}',
        headers=headers,
    )
    assert patched["status"] == {"observedGeneration": 1}
    assert patched["spec"]["maxAgents"] == 10


async def test_strategic_merge_patch_on_custom_resource_is_415(
    http: aiohttp.ClientSession,
) -> None:
    await call(http, "POST", POOLS, json=pool("a"))
    headers = {"Content-Type": "application/strategic-merge-patch+json"}
    status, body = await call(http, "PATCH", f"{POOLS}/a", data=b"{}", headers=headers)
    assert (status, body["reason"]) == (415, "UnsupportedMediaType")


async def test_server_side_apply_creates_then_merges(http: aiohttp.ClientSession) -> None:
    headers = {"Content-Type": "application/apply-patch+yaml"}
    manifest = yaml.safe_dump(pool("a", maxAgents=4))
    first, _ = await call(
        http, "PATCH", f"{POOLS}/a?fieldManager=t", data=manifest, headers=headers
    )
    manifest = yaml.safe_dump(pool("a", maxAgents=5))
    second, body = await call(
        http, "PATCH", f"{POOLS}/a?fieldManager=t", data=manifest, headers=headers
    )
    assert (first, second, body["spec"]["maxAgents"]) == (201, 200, 5)


async def test_list_with_label_selector(http: aiohttp.ClientSession) -> None:
    labelled = pool("a")
    labelled["metadata"]["labels"] = {"team": "x"}
    await call(http, "POST", POOLS, json=labelled)
    await call(http, "POST", POOLS, json=pool("b"))
    _, listed = await call(http, "GET", POOLS, params={"labelSelector": "team in (x)"})
    assert listed["kind"] == "AgentPoolList"
    assert [o["metadata"]["name"] for o in listed["items"]] == ["a"]


async def test_table_uses_printer_columns(http: aiohttp.ClientSession) -> None:
    await call(http, "POST", POOLS, json=pool("a"))
    _, body = await call(http, "GET", POOLS, headers={"Accept": TABLE})
    columns = [c["name"] for c in body["columnDefinitions"]]
    assert body["kind"] == "Table"
    assert columns[:3] == ["Name", "Ready", "Idle"] and "Age" in columns
    assert body["rows"][0]["cells"][0] == "a"


async def test_pod_table_has_pod_columns(http: aiohttp.ClientSession) -> None:
    pod = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "x"}]}}
    await call(http, "POST", PODS, json=pod)
    _, body = await call(http, "GET", f"{PODS}/p", headers={"Accept": TABLE})
    assert [c["name"] for c in body["columnDefinitions"]] == [
        "Name",
        "Ready",
        "Status",
        "Restarts",
        "Age",
    ]


async def test_delete_with_finalizer_sets_deletion_timestamp(http: aiohttp.ClientSession) -> None:
    held = pool("a")
    held["metadata"]["finalizers"] = ["example.dev/hold"]
    await call(http, "POST", POOLS, json=held)
    _, deleting = await call(http, "DELETE", f"{POOLS}/a")
    headers = {"Content-Type": "application/json-patch+json"}
    release = b'[{"op":"remove","path":"/metadata/finalizers"}]'
    await call(http, "PATCH", f"{POOLS}/a", data=release, headers=headers)
    missing, _ = await call(http, "GET", f"{POOLS}/a")
    assert deleting["metadata"]["deletionTimestamp"]
    assert missing == 404


async def test_unknown_resource_is_404(http: aiohttp.ClientSession) -> None:
    status, body = await call(http, "GET", "/apis/nope.dev/v1/things")
    assert (status, body["reason"]) == (404, "NotFound")


async def test_owner_deletion_collects_dependents_asynchronously(
    http: aiohttp.ClientSession,
) -> None:
    _, owner = await call(http, "POST", POOLS, json=pool("owner"))
    ref = {
        "apiVersion": "agentpool.dev/v1alpha1",
        "kind": "AgentPool",
        "name": "owner",
        "uid": owner["metadata"]["uid"],
    }
    config = {"metadata": {"name": "dependent", "ownerReferences": [ref]}}
    _, dependent = await call(http, "POST", "/api/v1/namespaces/default/configmaps", json=config)
    await call(http, "DELETE", f"{POOLS}/owner", json={"propagationPolicy": "Background"})
    params = {
        "watch": "1",
        "resourceVersion": dependent["metadata"]["resourceVersion"],
        "fieldSelector": "metadata.name=dependent",
    }
    async with asyncio.timeout(10):
        async with http.get("/api/v1/namespaces/default/configmaps", params=params) as response:
            event = json.loads(await response.content.readline())
    assert event["type"] == "DELETED"


async def test_dry_run_create_stores_nothing(http: aiohttp.ClientSession) -> None:
    status, body = await call(http, "POST", f"{POOLS}?dryRun=All", json=pool("a"))
    missing, _ = await call(http, "GET", f"{POOLS}/a")
    assert (status, body["spec"]["maxAgents"], missing) == (201, 10, 404)


async def test_delete_collection_by_label(http: aiohttp.ClientSession) -> None:
    for name, team in (("a", "x"), ("b", "y")):
        obj = pool(name)
        obj["metadata"]["labels"] = {"team": team}
        await call(http, "POST", POOLS, json=obj)
    await call(http, "DELETE", POOLS, params={"labelSelector": "team=x"})
    _, listed = await call(http, "GET", POOLS)
    assert [o["metadata"]["name"] for o in listed["items"]] == ["b"]
