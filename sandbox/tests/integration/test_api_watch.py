"""Watch streams over HTTP: replay, resume, 410 Gone, timeouts, bookmarks, selectors."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from agentpool_sandbox.cluster import Sandbox

CONFIGMAPS = "/api/v1/namespaces/default/configmaps"
DEADLINE = 10.0


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox(bookmark_interval=0.05) as sandbox:
        yield sandbox


@pytest.fixture
async def http(sandbox: Sandbox) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(sandbox.url) as session:
        yield session


async def create(http: aiohttp.ClientSession, name: str, **labels: str) -> dict[str, Any]:
    body = {"metadata": {"name": name, "labels": labels}, "data": {"k": "v"}}
    async with http.post(CONFIGMAPS, json=body) as response:
        assert response.status == 201
        created: dict[str, Any] = await response.json()
        return created


async def events(http: aiohttp.ClientSession, count: int, **params: str) -> list[dict[str, Any]]:
    """The first `count` events of a watch (fewer if the server ends the stream)."""
    received: list[dict[str, Any]] = []
    async with asyncio.timeout(DEADLINE):
        async with http.get(CONFIGMAPS, params={"watch": "true", **params}) as response:
            assert response.headers["Content-Type"].startswith("application/json")
            async for line in response.content:
                received.append(json.loads(line))
                if len(received) == count:
                    break
    return received


async def test_watch_without_version_replays_existing_objects(
    http: aiohttp.ClientSession,
) -> None:
    await create(http, "a")
    (event,) = await events(http, 1)
    assert (event["type"], event["object"]["metadata"]["name"]) == ("ADDED", "a")


async def test_watch_resumes_after_a_resource_version(http: aiohttp.ClientSession) -> None:
    first = await create(http, "a")
    await create(http, "b")
    (event,) = await events(http, 1, resourceVersion=first["metadata"]["resourceVersion"])
    assert event["object"]["metadata"]["name"] == "b"


async def test_watch_streams_live_changes(http: aiohttp.ClientSession) -> None:
    created = await create(http, "a")
    watching = asyncio.create_task(
        events(http, 1, resourceVersion=created["metadata"]["resourceVersion"])
    )
    async with http.delete(f"{CONFIGMAPS}/a") as response:
        assert response.status == 200
    (event,) = await watching
    assert (event["type"], event["object"]["metadata"]["name"]) == ("DELETED", "a")


async def test_watch_older_than_history_gets_410_error_event() -> None:
    async with Sandbox(watch_history=2) as small, aiohttp.ClientSession(small.url) as http:
        start = small.store.resource_version
        for name in "abcd":
            await create(http, name)
        (event,) = await events(http, 1, resourceVersion=start)
    assert event["type"] == "ERROR"
    assert (event["object"]["code"], event["object"]["reason"]) == (410, "Expired")


async def test_timeout_seconds_ends_the_stream(http: aiohttp.ClientSession) -> None:
    received = await events(http, 1000, resourceVersion="1", timeoutSeconds="1")
    assert all(e["type"] != "ERROR" for e in received)


async def test_bookmarks_carry_the_current_version(
    http: aiohttp.ClientSession, sandbox: Sandbox
) -> None:
    created = await create(http, "a")
    rv = created["metadata"]["resourceVersion"]
    (event,) = await events(http, 1, resourceVersion=rv, allowWatchBookmarks="true")
    assert event["type"] == "BOOKMARK"
    assert int(event["object"]["metadata"]["resourceVersion"]) >= int(rv)


async def test_send_initial_events_ends_with_annotated_bookmark(
    http: aiohttp.ClientSession,
) -> None:
    await create(http, "a")
    received = await events(
        http,
        2,
        sendInitialEvents="true",
        resourceVersionMatch="NotOlderThan",
        allowWatchBookmarks="true",
    )
    assert [e["type"] for e in received] == ["ADDED", "BOOKMARK"]
    annotations = received[1]["object"]["metadata"]["annotations"]
    assert annotations == {"k8s.io/initial-events-end": "true"}


async def test_watch_filters_by_label_and_field_selectors(http: aiohttp.ClientSession) -> None:
    await create(http, "a", team="x")
    await create(http, "b", team="y")
    await create(http, "c", team="x")
    (by_label,) = await events(http, 1, labelSelector="team=y")
    (by_name,) = await events(http, 1, fieldSelector="metadata.name=c")
    assert by_label["object"]["metadata"]["name"] == "b"
    assert by_name["object"]["metadata"]["name"] == "c"


async def test_watch_as_table_sends_table_rows(http: aiohttp.ClientSession) -> None:
    await create(http, "a")
    accept = "application/json;as=Table;v=v1;g=meta.k8s.io"
    async with asyncio.timeout(DEADLINE):
        async with http.get(
            CONFIGMAPS, params={"watch": "1"}, headers={"Accept": accept}
        ) as response:
            event = json.loads(await response.content.readline())
    assert event["object"]["kind"] == "Table"
    assert event["object"]["rows"][0]["cells"][0] == "a"


async def test_legacy_watch_path_watches_one_object(http: aiohttp.ClientSession) -> None:
    await create(http, "a")
    await create(http, "b")
    async with asyncio.timeout(DEADLINE):
        async with http.get("/api/v1/watch/namespaces/default/configmaps/b") as response:
            event = json.loads(await response.content.readline())
    assert (event["type"], event["object"]["metadata"]["name"]) == ("ADDED", "b")
