"""EventRecorder against the sandbox: repeats become one Event with a count, not new objects."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio.client import ApiClient, CoreV1Api

from agentpool.kube import client as kube
from agentpool.kube.events import (
    COMBINED,
    MAX_SIMILAR,
    NORMAL,
    WARNING,
    EventCorrelator,
    EventRecorder,
    ObjectRef,
)
from agentpool_sandbox.cluster import Sandbox

NS = "default"
RECORDER_AGENT = "agentpool-events-test"
POD = ObjectRef("v1", "Pod", NS, "agent-1", uid="uid-1")


@pytest.fixture
async def recorder(cluster: Sandbox) -> AsyncIterator[EventRecorder]:
    """A recorder on its own client (so the sandbox counts its requests apart), combining."""
    api = kube.new_api_client(await kube.load_configuration(str(cluster.kubeconfig_path)))
    api.user_agent = RECORDER_AGENT
    events = EventRecorder(api, correlator=EventCorrelator(max_similar=MAX_SIMILAR))
    yield events
    await events.close()
    await api.close()


async def recorder_requests(cluster: Sandbox) -> dict[str, int]:
    """The recorder's requests on events, by verb, as the sandbox counted them."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{cluster.url}/sandbox/v1/stats") as response,
    ):
        stats = await response.json()
    by_client = stats["requests"]["byClient"].get(RECORDER_AGENT) or {}
    counts: dict[str, int] = (by_client.get("byResource") or {}).get("events", {})
    return counts


async def events_about(api: ApiClient, name: str) -> list[dict[str, Any]]:
    listing = await CoreV1Api(api).list_namespaced_event(NS)
    return [
        api.sanitize_for_serialization(e)
        for e in listing.items
        if e.involved_object and e.involved_object.name == name
    ]


async def test_fifty_identical_records_make_one_event_counting_fifty(
    cluster: Sandbox, kube_api: ApiClient, recorder: EventRecorder
) -> None:
    for _ in range(50):
        recorder.record(POD, WARNING, "BackOff", "agent restarting")
    await recorder.flush()

    [event] = await events_about(kube_api, "agent-1")
    assert (event["count"], event["reason"], event["type"]) == (50, "BackOff", WARNING)
    assert event["lastTimestamp"] >= event["firstTimestamp"]
    # One create, then the 49 repeats that arrived meanwhile in one patch.
    assert await recorder_requests(cluster) == {"create": 1, "patch": 1}


async def test_distinct_messages_make_distinct_events(
    kube_api: ApiClient, recorder: EventRecorder
) -> None:
    for i in range(3):
        recorder.record(POD, NORMAL, "Started", f"step {i} started")
    await recorder.flush()

    events = await events_about(kube_api, "agent-1")
    assert sorted((e["message"], e["count"]) for e in events) == [
        ("step 0 started", 1),
        ("step 1 started", 1),
        ("step 2 started", 1),
    ]


async def test_a_later_repeat_patches_the_count_of_the_existing_event(
    cluster: Sandbox, kube_api: ApiClient, recorder: EventRecorder
) -> None:
    recorder.record(POD, NORMAL, "Reaped", "idle too long")
    await recorder.flush()
    recorder.record(POD, NORMAL, "Reaped", "idle too long")
    await recorder.flush()

    [event] = await events_about(kube_api, "agent-1")
    assert event["count"] == 2
    assert await recorder_requests(cluster) == {"create": 1, "patch": 1}


async def test_a_repeat_of_an_expired_event_creates_it_again(
    kube_api: ApiClient, recorder: EventRecorder
) -> None:
    recorder.record(POD, NORMAL, "Reaped", "idle too long")
    await recorder.flush()
    [expired] = await events_about(kube_api, "agent-1")
    await CoreV1Api(kube_api).delete_namespaced_event(expired["metadata"]["name"], NS)

    recorder.record(POD, NORMAL, "Reaped", "idle too long")
    await recorder.flush()

    [event] = await events_about(kube_api, "agent-1")
    assert event["metadata"]["name"] != expired["metadata"]["name"]
    assert (event["count"], recorder.failed) == (2, 0)


async def test_many_similar_messages_are_combined_into_one_event(
    cluster: Sandbox, kube_api: ApiClient, recorder: EventRecorder
) -> None:
    for i in range(MAX_SIMILAR + 20):
        recorder.record(POD, NORMAL, "AgentLaunched", f"created agent pod a{i}")
    await recorder.flush()

    events = await events_about(kube_api, "agent-1")
    combined = [e for e in events if e["message"].startswith(COMBINED)]
    assert len(events) == MAX_SIMILAR + 1
    assert [(e["count"], e["message"]) for e in combined] == [
        (20, f"{COMBINED}: created agent pod a{MAX_SIMILAR + 19}")
    ]
    assert await recorder_requests(cluster) == {"create": MAX_SIMILAR + 1, "patch": 1}
