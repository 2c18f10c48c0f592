"""Malformed request bodies get the API server's 4xx naming the field, never a 500.

A real API server decodes a body into typed structs first (a value of the wrong JSON type is a
400 BadRequest, `... cannot be handled as a Pod: json: cannot unmarshal ...`), then validates
(422 Invalid with field causes; for custom resources the schema's type checks are validation).
"""

from __future__ import annotations

import asyncio
import copy
import json
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from agentpool_sandbox.cluster import Sandbox

ROOT = Path(__file__).resolve().parents[3]
NS = "/api/v1/namespaces/default"
PODS = f"{NS}/pods"
CONFIGMAPS = f"{NS}/configmaps"
STEPS = "/apis/agentpool.dev/v1alpha1/namespaces/default/buildsteps"
POOLS = "/apis/agentpool.dev/v1alpha1/namespaces/default/agentpools"
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY = "application/apply-patch+yaml"


def pod(name: str = "p", **container: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "busybox", **container}]},
    }


def step(name: str = "s", **overrides: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "agentpool.dev/v1alpha1",
        "kind": "BuildStep",
        "metadata": {"name": name},
        "spec": {"pool": "demo", "build": "b", "order": 1, "script": "true"},
    }
    obj.update(overrides)
    return obj


def crd_with_schema(schema: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.dev"},
        "spec": {
            "group": "example.dev",
            "names": {"plural": "widgets", "kind": "Widget"},
            "scope": "Namespaced",
            "versions": [
                {"name": "v1", "served": True, "storage": True, "schema": schema},
            ],
        },
    }


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with Sandbox() as sandbox, aiohttp.ClientSession(sandbox.url) as session:
        for path in sorted((ROOT / "crds").glob("*.yaml")):
            async with session.post(CRDS, json=yaml.safe_load(path.read_text())) as response:
                assert response.status == 201
        for path, body in ((CONFIGMAPS, {"metadata": {"name": "cm"}}), (PODS, pod("live"))):
            async with session.post(path, json=body) as response:
                assert response.status == 201
        async with session.post(STEPS, json=step("live")) as response:
            assert response.status == 201
        yield session


# (method, path, content type, body, expected code, text the message must contain)
HOSTILE: dict[str, tuple[str, str, str, Any, int, str]] = {
    "step spec a string": (
        "POST",
        STEPS,
        "",
        step(spec="run it"),
        422,
        "spec in body must be of type object",
    ),
    "pod resources a string": (
        "POST",
        PODS,
        "",
        pod(resources="lots"),
        400,
        "spec.containers[0].resources",
    ),
    "pod spec a list": ("POST", PODS, "", {**pod(), "spec": []}, 400, "field spec of type object"),
    "pod metadata a list": (
        "POST",
        PODS,
        "",
        {**pod(), "metadata": ["p"]},
        400,
        "field metadata of type object",
    ),
    "pod labels not strings": (
        "POST",
        PODS,
        "",
        {**pod(), "metadata": {"name": "p", "labels": {"a": 1}}},
        400,
        "metadata.labels.a of type string",
    ),
    "step metadata a string": (
        "POST",
        STEPS,
        "",
        step(metadata="s"),
        400,
        "field metadata of type object",
    ),
    "step annotations a list": (
        "POST",
        STEPS,
        "",
        step(metadata={"name": "s", "annotations": [1]}),
        400,
        "metadata.annotations",
    ),
    "step labels a boolean": (
        "POST",
        STEPS,
        "",
        step(metadata={"name": "s", "labels": {"a": True}}),
        400,
        "metadata.labels.a",
    ),
    "step env a string": (
        "POST",
        STEPS,
        "",
        step(spec={"pool": "p", "build": "b", "order": 1, "script": "x", "env": "A=1"}),
        422,
        "spec.env",
    ),
    "pool template a string": (
        "POST",
        POOLS,
        "",
        {"metadata": {"name": "ap"}, "spec": {"template": "x"}},
        422,
        "spec.template",
    ),
    "huge name": ("POST", CONFIGMAPS, "", {"metadata": {"name": "a" * 300}}, 422, "metadata.name"),
    "name a number": (
        "POST",
        CONFIGMAPS,
        "",
        {"metadata": {"name": 5}},
        400,
        "metadata.name of type string",
    ),
    "generateName a number": (
        "POST",
        CONFIGMAPS,
        "",
        {"metadata": {"generateName": 7}},
        400,
        "metadata.generateName",
    ),
    "apiVersion a list": (
        "POST",
        CONFIGMAPS,
        "",
        {"apiVersion": [1], "metadata": {"name": "c"}},
        400,
        "apiVersion of type string",
    ),
    "finalizers of numbers": (
        "POST",
        CONFIGMAPS,
        "",
        {"metadata": {"name": "c", "finalizers": [1]}},
        400,
        "metadata.finalizers[0]",
    ),
    "ownerReference name a list": (
        "POST",
        CONFIGMAPS,
        "",
        {
            "metadata": {
                "name": "c",
                "ownerReferences": [{"apiVersion": "v1", "kind": "X", "uid": "u", "name": []}],
            }
        },
        400,
        "metadata.ownerReferences[0].name",
    ),
    "configmap data a list": (
        "POST",
        CONFIGMAPS,
        "",
        {"metadata": {"name": "c"}, "data": [1]},
        400,
        "field data of type object",
    ),
    "service spec a number": (
        "POST",
        f"{NS}/services",
        "",
        {"metadata": {"name": "s"}, "spec": 5},
        400,
        "field spec",
    ),
    "namespace spec a string": (
        "POST",
        "/api/v1/namespaces",
        "",
        {"metadata": {"name": "n"}, "spec": "x"},
        400,
        "field spec",
    ),
    "body a list": ("POST", CONFIGMAPS, "", [1, 2], 400, ""),
    "body null": ("POST", STEPS, "", None, 400, ""),
    "undecodable JSON": ("POST", CONFIGMAPS, "", b"{bad", 400, "error decoding"),
    "CRD spec a string": (
        "POST",
        CRDS,
        "",
        {"metadata": {"name": "a.b.c"}, "spec": "x"},
        400,
        "field spec of type object",
    ),
    "CRD versions a string": (
        "POST",
        CRDS,
        "",
        {**crd_with_schema({}), "spec": {**crd_with_schema({})["spec"], "versions": "v1"}},
        400,
        "spec.versions",
    ),
    "CRD schema a string": (
        "POST",
        CRDS,
        "",
        crd_with_schema({"openAPIV3Schema": "x"}),
        400,
        "openAPIV3Schema",
    ),
    "CRD bad pattern": (
        "POST",
        CRDS,
        "",
        crd_with_schema(
            {
                "openAPIV3Schema": {
                    "type": "object",
                    "properties": {"a": {"type": "string", "pattern": "("}},
                }
            }
        ),
        422,
        "must be a valid regular expression",
    ),
    "replace with metadata a list": (
        "PUT",
        f"{CONFIGMAPS}/cm",
        "",
        {"metadata": [1]},
        400,
        "field metadata",
    ),
    "merge patch metadata a list": (
        "PATCH",
        f"{CONFIGMAPS}/cm",
        MERGE,
        {"metadata": [1]},
        400,
        "field metadata",
    ),
    "merge patch labels a number": (
        "PATCH",
        f"{CONFIGMAPS}/cm",
        MERGE,
        {"metadata": {"labels": {"a": 2}}},
        400,
        "metadata.labels.a",
    ),
    "strategic patch data a string": (
        "PATCH",
        f"{CONFIGMAPS}/cm",
        STRATEGIC,
        {"data": "x"},
        400,
        "field data",
    ),
    "strategic patch resources": (
        "PATCH",
        f"{PODS}/live",
        STRATEGIC,
        {"spec": {"containers": [{"name": "c", "resources": "x"}]}},
        400,
        "spec.containers[0].resources",
    ),
    "json patch metadata a number": (
        "PATCH",
        f"{CONFIGMAPS}/cm",
        JSON_PATCH,
        [{"op": "replace", "path": "/metadata", "value": 5}],
        400,
        "field metadata",
    ),
    "json patch whole object": (
        "PATCH",
        f"{CONFIGMAPS}/cm",
        JSON_PATCH,
        [{"op": "replace", "path": "", "value": 5}],
        400,
        "Go value of type ConfigMap",
    ),
    "json patch not a list": ("PATCH", f"{CONFIGMAPS}/cm", JSON_PATCH, {"op": "x"}, 400, ""),
    "apply metadata a number": (
        "PATCH",
        f"{CONFIGMAPS}/new",
        APPLY,
        b"metadata: 5\n",
        400,
        "field metadata",
    ),
    "pod status a string": (
        "PUT",
        f"{PODS}/live/status",
        "",
        {"metadata": {"name": "live"}, "status": "x"},
        400,
        "field status",
    ),
    "pod conditions a string": (
        "PATCH",
        f"{PODS}/live/status",
        MERGE,
        {"status": {"conditions": "x"}},
        400,
        "status.conditions",
    ),
    "step status a string": (
        "PATCH",
        f"{STEPS}/live/status",
        MERGE,
        {"status": "x"},
        422,
        "status",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
async def test_hostile_body_is_a_4xx_naming_the_field(
    http: aiohttp.ClientSession, case: str
) -> None:
    method, path, content_type, body, code, needle = HOSTILE[case]
    if isinstance(body, bytes):
        data = body
    else:
        data = yaml.safe_dump(body).encode() if content_type == APPLY else json.dumps(body).encode()
    headers = {"Content-Type": content_type or "application/json"}

    async with http.request(method, path, data=data, headers=headers) as response:
        status = await response.json()

    assert (response.status, status["kind"], status["code"]) == (code, "Status", code)
    assert status["reason"] == {400: "BadRequest", 422: "Invalid"}[code]
    assert needle in status["message"]


async def test_bad_query_parameter_is_a_400(http: aiohttp.ClientSession) -> None:
    async with http.get(CONFIGMAPS, params={"watch": "1", "timeoutSeconds": "soon"}) as response:
        status = await response.json()

    assert (response.status, status["reason"]) == (400, "BadRequest")
    assert "timeoutSeconds" in status["message"]


JUNK: list[Any] = [None, 0, -1, 1.5, True, "", "x", "a" * 300, [], [1, "a"], {}, {"k": [1]}, "\x00"]
SEEDS = {
    PODS: pod("seed", env=[{"name": "A", "value": "1"}], ports=[{"containerPort": 80}]),
    CONFIGMAPS: {"metadata": {"name": "seed", "labels": {"a": "b"}}, "data": {"a": "b"}},
    STEPS: step("seed", spec={"pool": "p", "build": "b", "order": 1, "script": "x", "env": []}),
    f"{NS}/services": {"metadata": {"name": "seed"}, "spec": {"ports": [{"port": 80}]}},
}


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    children = (
        node.items()
        if isinstance(node, dict)
        else enumerate(node)
        if isinstance(node, list)
        else ()
    )
    for key, value in children:
        found += _paths(value, (*prefix, key))
    return found


def _mutated(obj: Any, rng: random.Random) -> Any:
    obj = copy.deepcopy(obj)
    for _ in range(rng.randint(1, 3)):
        paths = _paths(obj)
        if not paths:
            break
        *parents, last = rng.choice(paths)
        node = obj
        for key in parents:
            node = node[key]
        node[last] = copy.deepcopy(rng.choice(JUNK))
    return obj


async def test_randomly_mangled_bodies_never_get_a_500(http: aiohttp.ClientSession) -> None:
    """Seeded mutations of valid objects on create, replace and merge patch: all 2xx or 4xx."""
    rng = random.Random(20261204)
    answers: list[tuple[int, str, Any]] = []
    for index in range(120):
        path = rng.choice(sorted(SEEDS))
        body = copy.deepcopy(SEEDS[path])
        body["metadata"]["name"] = f"m{index}"
        method = rng.choice(["POST", "PUT", "PATCH"])
        if method == "POST":
            url, sent, content_type = path, _mutated(body, rng), "application/json"
        else:
            async with http.post(path, json=body) as created:
                assert created.status == 201
            url = f"{path}/m{index}"
            sent = _mutated(body, rng)
            content_type = "application/json" if method == "PUT" else MERGE
        async with http.request(
            method, url, data=json.dumps(sent), headers={"Content-Type": content_type}
        ) as response:
            answers.append((response.status, method, sent))

    assert [a for a in answers if a[0] >= 500] == []
    assert {status for status, _, _ in answers} & {400, 422}


async def test_a_container_that_cannot_be_created_is_reported_not_crashed(
    http: aiohttp.ClientSession,
) -> None:
    manifest = pod("nul", command=["sleep", "100"], workingDir="/a\x00b")

    async with http.post(PODS, json=manifest) as response:
        assert response.status == 201
    for _ in range(200):
        async with http.get(f"{PODS}/nul") as response:
            status = (await response.json()).get("status") or {}
        waiting = (status.get("containerStatuses") or [{}])[0].get("state", {}).get("waiting")
        if waiting and waiting["reason"] == "CreateContainerError":
            break
        await asyncio.sleep(0.02)

    assert waiting == {"reason": "CreateContainerError", "message": "embedded null byte"}
    assert status["phase"] == "Pending"


@pytest.mark.parametrize("path", [f"{CONFIGMAPS}/cm", CONFIGMAPS])
async def test_unknown_propagation_policy_is_422_and_deletes_nothing(
    http: aiohttp.ClientSession, path: str
) -> None:
    async with http.delete(path, params={"propagationPolicy": "Eventually"}) as response:
        status = await response.json()
    async with http.get(f"{CONFIGMAPS}/cm") as still:
        assert still.status == 200

    assert (response.status, status["reason"]) == (422, "Invalid")
    assert status["message"] == (
        'DeleteOptions.meta.k8s.io "" is invalid: propagationPolicy: Unsupported value: '
        '"Eventually": supported values: "Foreground", "Background", "Orphan", "nil"'
    )
