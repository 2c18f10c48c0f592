"""OpenAPI v3/v2 documents: index and hashes, built-in and CRD components, paths kubectl reads."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import shutil
import struct
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from agentpool_sandbox.definitions import PatchMeta, patch_merge_keys
from agentpool_sandbox.openapi import OpenApi, custom_component_name
from agentpool_sandbox.openapi import group_version_path as openapi_path
from agentpool_sandbox.openapi_protobuf import MEDIA_TYPE as V2_PROTOBUF
from agentpool_sandbox.openapi_protobuf import MEDIA_TYPE_DEPRECATED as V2_PROTOBUF_AT
from agentpool_sandbox.openapi_protobuf import encode_document
from agentpool_sandbox.resources import BUILTINS
from agentpool_sandbox.server import json_acceptable, negotiate

ROOT = Path(__file__).resolve().parents[3]
CORE = "api/v1"
POOLS = "apis/agentpool.dev/v1alpha1"
POD = "io.k8s.api.core.v1.Pod"
AGENT_POOL = "dev.agentpool.v1alpha1.AgentPool"


def load_crds() -> list[dict[str, Any]]:
    return [
        yaml.safe_load((ROOT / "crds" / f).read_text())
        for f in ("agentpools.yaml", "buildsteps.yaml")
    ]


@pytest.fixture
def crds() -> list[dict[str, Any]]:
    return load_crds()


@pytest.fixture
def openapi(crds: list[dict[str, Any]]) -> OpenApi:
    return OpenApi(lambda: crds)


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def test_component_name_reverses_the_group() -> None:
    assert custom_component_name("agentpool.dev", "v1alpha1", "AgentPool") == AGENT_POOL


def test_index_lists_builtin_and_crd_group_versions(openapi: OpenApi) -> None:
    paths = openapi.v3_index()["paths"]

    assert {CORE, "apis/apps/v1", "apis/rbac.authorization.k8s.io/v1", POOLS} <= set(paths)
    url = paths[POOLS]["serverRelativeURL"]
    assert url.startswith(f"/openapi/v3/{POOLS}?hash=")
    assert url.endswith(openapi.v3_hash(POOLS) or "missing")


def test_hash_changes_when_a_crd_changes(crds: list[dict[str, Any]]) -> None:
    served = [copy.deepcopy(c) for c in crds]
    openapi = OpenApi(lambda: served)
    before = openapi.v3_index()["paths"]

    served[0]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["description"] = "changed"
    after = openapi.v3_index()["paths"]

    assert before[POOLS] != after[POOLS]
    assert before[CORE] == after[CORE]


def test_crd_group_version_disappears_with_its_crd(crds: list[dict[str, Any]]) -> None:
    served = list(crds)
    openapi = OpenApi(lambda: served)
    assert openapi.v3_document(POOLS) is not None

    served.clear()

    assert POOLS not in openapi.v3_index()["paths"]
    assert openapi.v3_document(POOLS) is None


def test_every_builtin_the_server_serves_is_published(openapi: OpenApi) -> None:
    for served in BUILTINS:
        document = openapi.v3_document(openapi_path(served.group, served.version))
        assert document is not None, served.key
        kinds = [
            gvk
            for schema in document["components"]["schemas"].values()
            for gvk in schema.get("x-kubernetes-group-version-kind") or []
        ]

        assert {"group": served.group, "version": served.version, "kind": served.kind} in kinds


def test_unknown_group_version_has_no_document(openapi: OpenApi) -> None:
    assert openapi.v3_document("apis/nothing.example/v1") is None


def test_core_document_has_real_pod_definition(openapi: OpenApi) -> None:
    document = openapi.v3_document(CORE)
    assert document is not None
    schemas = document["components"]["schemas"]
    pod = schemas[POD]

    assert document["openapi"] == "3.0.0"
    assert pod["x-kubernetes-group-version-kind"] == [{"group": "", "kind": "Pod", "version": "v1"}]
    assert pod["properties"]["spec"]["allOf"] == [
        {"$ref": "#/components/schemas/io.k8s.api.core.v1.PodSpec"}
    ]
    assert pod["properties"]["kind"] == {
        "description": pod["properties"]["kind"]["description"],
        "type": "string",
    }
    containers = schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"]
    assert containers["x-kubernetes-patch-merge-key"] == "name"
    assert containers["x-kubernetes-patch-strategy"] == "merge"
    assert containers["x-kubernetes-list-map-keys"] == ["name"]
    assert schemas["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]["format"] == "int-or-string"


def test_every_ref_resolves_inside_its_document(openapi: OpenApi) -> None:
    for path in (CORE, "apis/apps/v1", POOLS):
        document = openapi.v3_document(path)
        assert document is not None
        schemas = document["components"]["schemas"]
        targets = {r.removeprefix("#/components/schemas/") for r in refs(document)}

        assert targets <= set(schemas), path


def test_crd_component_is_published_like_apiextensions(openapi: OpenApi) -> None:
    document = openapi.v3_document(POOLS)
    assert document is not None
    pool = document["components"]["schemas"][AGENT_POOL]

    assert pool["x-kubernetes-group-version-kind"] == [
        {"group": "agentpool.dev", "kind": "AgentPool", "version": "v1alpha1"}
    ]
    assert pool["properties"]["metadata"]["allOf"] == [
        {"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}
    ]
    assert pool["properties"]["spec"]["properties"]["minIdle"]["minimum"] == 0
    assert "dev.agentpool.v1alpha1.AgentPoolList" in document["components"]["schemas"]
    assert "dev.agentpool.v1alpha1.BuildStep" in document["components"]["schemas"]


def test_crd_patch_refuses_strategic_merge_and_offers_field_validation(openapi: OpenApi) -> None:
    document = openapi.v3_document(POOLS)
    assert document is not None
    item = document["paths"][
        "/apis/agentpool.dev/v1alpha1/namespaces/{namespace}/agentpools/{name}"
    ]
    patch = item["patch"]

    assert patch["x-kubernetes-group-version-kind"] == {
        "group": "agentpool.dev",
        "kind": "AgentPool",
        "version": "v1alpha1",
    }
    assert "application/strategic-merge-patch+json" not in patch["requestBody"]["content"]
    assert "application/merge-patch+json" in patch["requestBody"]["content"]
    assert "fieldValidation" in [p["name"] for p in patch["parameters"]]
    assert (
        "/apis/agentpool.dev/v1alpha1/namespaces/{namespace}/agentpools/{name}/status"
        in (document["paths"])
    )


def test_builtin_patch_accepts_strategic_merge(openapi: OpenApi) -> None:
    document = openapi.v3_document(CORE)
    assert document is not None
    patch = document["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"]

    assert "application/strategic-merge-patch+json" in patch["requestBody"]["content"]
    assert patch["operationId"] == "patchCoreV1NamespacedPod"


def test_cluster_scoped_kinds_have_no_namespace_in_paths(openapi: OpenApi) -> None:
    document = openapi.v3_document(CORE)
    assert document is not None

    assert "/api/v1/namespaces/{name}" in document["paths"]


def test_v2_uses_definitions_refs_and_drops_v3_only_keywords(openapi: OpenApi) -> None:
    document = openapi.v2_document()
    definitions = document["definitions"]
    targets = {r.removeprefix("#/definitions/") for r in refs(document)}

    assert document["swagger"] == "2.0"
    assert POD in definitions and AGENT_POOL in definitions
    assert targets <= set(definitions)
    assert "nullable" not in str(definitions[AGENT_POOL])
    patch = document["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"]
    assert "application/strategic-merge-patch+json" in patch["consumes"]


# -- real kubectl against the documents ----------------------------------------------------

KUBECTL = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")


def _resource(name: str, kind: str, *, namespaced: bool = True) -> dict[str, Any]:
    return {
        "name": name,
        "singularName": kind.lower(),
        "namespaced": namespaced,
        "kind": kind,
        "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
    }


def _discovery_app(openapi: OpenApi) -> web.Application:
    """Just enough legacy discovery for kubectl to map names to kinds; OpenAPI from `openapi`."""
    pools = "agentpool.dev/v1alpha1"
    documents = {
        "/api": {"kind": "APIVersions", "versions": ["v1"]},
        "/api/v1": {
            "kind": "APIResourceList",
            "groupVersion": "v1",
            "resources": [_resource("pods", "Pod")],
        },
        "/apis": {
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [
                {
                    "name": "agentpool.dev",
                    "versions": [{"groupVersion": pools, "version": "v1alpha1"}],
                    "preferredVersion": {"groupVersion": pools, "version": "v1alpha1"},
                }
            ],
        },
        f"/apis/{pools}": {
            "kind": "APIResourceList",
            "groupVersion": pools,
            "resources": [
                _resource("agentpools", "AgentPool"),
                _resource("buildsteps", "BuildStep"),
            ],
        },
    }

    async def handle(request: web.Request) -> web.StreamResponse:
        path = request.path
        if path in documents:
            return web.json_response(documents[path])
        if path == "/openapi/v3":
            return web.json_response(openapi.v3_index())
        document = openapi.v3_document(path.removeprefix("/openapi/v3/"))
        return web.json_response(document) if document else web.Response(status=404)

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    return app


@pytest.fixture
async def kubeconfig(openapi: OpenApi, tmp_path: Path) -> AsyncIterator[Path]:
    runner = web.AppRunner(_discovery_app(openapi))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    config = tmp_path / "kubeconfig"
    config.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "s", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "s", "context": {"cluster": "s", "user": "u"}}],
                "current-context": "s",
            }
        )
    )
    try:
        yield config
    finally:
        await runner.cleanup()


async def explain(kubeconfig: Path, field: str) -> str:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "HOME": str(kubeconfig.parent)}
    process = await asyncio.create_subprocess_exec(
        str(KUBECTL), "explain", field, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, output.decode()
    return output.decode()


@pytest.mark.skipif(KUBECTL is None, reason="kubectl not installed")
async def test_kubectl_explains_a_crd_field(kubeconfig: Path) -> None:
    output = await explain(kubeconfig, "agentpool.spec.minIdle")

    assert "KIND:       AgentPool" in output
    assert "FIELD: minIdle <integer>" in output


@pytest.mark.skipif(KUBECTL is None, reason="kubectl not installed")
async def test_kubectl_explains_a_builtin_field(kubeconfig: Path) -> None:
    output = await explain(kubeconfig, "pod.spec.containers")

    assert "FIELD: containers <[]Container>" in output
    assert "image\t<string>" in output


def test_patch_merge_keys_for_strategic_merge() -> None:
    pods = patch_merge_keys("pods")

    assert pods["spec.containers"] == PatchMeta("merge", "name", ("name",))
    assert pods["spec.containers[].ports"].merge_key == "containerPort"
    assert pods["spec.volumes"].strategy == "merge,retainKeys"
    assert (
        patch_merge_keys(("apps", "v1", "Deployment"))["spec.template.spec.containers"]
        == (pods["spec.containers"])
    )
    assert patch_merge_keys("widgets.example.dev") == {}


@pytest.mark.parametrize(
    ("accept", "acceptable"),
    [
        ("", True),
        ("application/json", True),
        ("application/json, */*", True),
        ("application/*", True),
        ("*/*;q=0.1", True),
        ("application/com.github.proto-openapi.spec.v2@v1.0+protobuf", False),
        ("application/com.github.proto-openapi.spec.v3@v1.0+protobuf", False),
        ("application/yaml", False),
        ("application/json;q=0", False),
    ],
)
def test_openapi_is_served_only_when_json_is_acceptable(accept: str, acceptable: bool) -> None:
    assert json_acceptable(accept) is acceptable


@pytest.mark.parametrize(
    ("accept", "chosen"),
    [
        ("", "application/json"),
        ("*/*", "application/json"),
        (V2_PROTOBUF_AT, V2_PROTOBUF),
        (f"{V2_PROTOBUF_AT}, */*", V2_PROTOBUF),
        (f"*/*, {V2_PROTOBUF_AT}", V2_PROTOBUF),  # the more specific clause first
        (f"{V2_PROTOBUF};q=0.5, application/json", "application/json"),
        ("application/yaml", None),
        ("application/json;q=0", None),
    ],
)
def test_openapi_v2_negotiation_follows_kube_openapi(accept: str, chosen: str | None) -> None:
    offers = ("application/json", V2_PROTOBUF, V2_PROTOBUF_AT)

    picked = negotiate(accept, offers)

    # Both protobuf spellings are answered with the same media type.
    assert (V2_PROTOBUF if picked == V2_PROTOBUF_AT else picked) == chosen


Message = dict[int, list[Any]]


def message(data: bytes) -> Message:
    """A protobuf message as {field number: [values]}: ints, doubles (fixed64) or bytes."""
    decoded: Message = {}
    position = 0

    def varint() -> int:
        nonlocal position
        result = shift = 0
        while True:
            byte = data[position]
            position += 1
            result |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return result

    while position < len(data):
        key = varint()
        number, wire = key >> 3, key & 7
        value: Any
        if wire == 0:
            value = varint()
        elif wire == 1:
            value = struct.unpack("<d", data[position : position + 8])[0]
            position += 8
        else:
            assert wire == 2, wire
            length = varint()
            value = data[position : position + length]
            position += length
        decoded.setdefault(number, []).append(value)
    return decoded


def named(entries: list[Any]) -> dict[str, Message]:
    """gnostic's ordered maps (`Named*{name = 1, value = 2}`), values decoded."""
    out = {}
    for entry in entries:
        fields = message(entry)
        out[fields[1][0].decode()] = message(fields.get(2, [b""])[0])
    return out


def test_v2_protobuf_encodes_schemas_as_gnostic_does() -> None:
    document = {
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": "v1.37.0"},
        "paths": {
            "/api/v1/namespaces/{namespace}/widgets": {
                "get": {"operationId": "listWidgets", "responses": {"200": {"description": "OK"}}},
                "parameters": [
                    {"name": "namespace", "in": "path", "required": True, "type": "string"}
                ],
            }
        },
        "definitions": {
            "Widget": {
                "type": "object",
                "required": ["spec"],
                "properties": {
                    "spec": {"type": "object", "additionalProperties": False},
                    "tags": {"type": "array", "items": {"type": "string"}},
                    "size": {"type": "integer", "minimum": -1, "maximum": 2.5},
                },
                "x-kubernetes-group-version-kind": [{"group": "", "kind": "W", "version": "v1"}],
            }
        },
    }

    doc = message(encode_document(document))
    widget = named(message(doc[9][0])[1])["Widget"]
    properties = named(message(widget[25][0])[1])
    spec, tags, size = properties["spec"], properties["tags"], properties["size"]
    extension = named(widget[31])["x-kubernetes-group-version-kind"]
    path = named(message(doc[8][0])[2])["/api/v1/namespaces/{namespace}/widgets"]
    path_parameter = message(message(message(path[9][0])[1][0])[2][0])[4][0]

    assert doc[1] == [b"2.0"]
    assert message(widget[22][0]) == {1: [b"object"]}
    assert widget[19] == [b"spec"]
    assert message(spec[21][0]) == {2: [0]}  # additionalProperties: false is written
    assert message(message(tags[23][0])[1][0])[22] == [b"\n\x06string"]
    assert (size[9], size[7]) == ([-1.0], [2.5])
    assert json.loads(extension[2][0]) == [{"group": "", "kind": "W", "version": "v1"}]
    assert message(path[2][0])[5] == [b"listWidgets"]
    assert message(path_parameter)[4] == [b"namespace"]
