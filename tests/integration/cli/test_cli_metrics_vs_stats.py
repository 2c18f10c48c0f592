"""The operator's /metrics agree with what the sandbox measured from outside."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from cli_cluster import NS, create, phase, pool_body, step_body
from kubernetes_asyncio.client import ApiClient
from prometheus_client.parser import text_string_to_metric_families

from agentpool import USER_AGENT
from agentpool.runtime import Runtime
from agentpool_sandbox.cluster import Sandbox

POOL = f"{NS}/scraped"
LIMIT = 4


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(
    scrape: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return scrape.get((name, frozenset({"pool": POOL, **labels}.items())), 0.0)


async def test_metrics_scraped_during_a_run_match_the_sandbox_stats(
    operator: Any,
    cluster: Sandbox,
    kube_api: ApiClient,
    until: Callable[..., Awaitable[Any]],
) -> None:
    runtime: Runtime = operator.runtime
    await create(kube_api, pool_body("scraped", apiConnections={"max": LIMIT}))
    names = ["first", "second", "third"]
    for order, name in enumerate(names):
        script = "sleep 1; echo first" if name == "first" else f"echo {name}"
        await create(kube_api, step_body(name, "scraped", script, build="b", order=order))

    async with aiohttp.ClientSession() as http:

        async def scrape() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
            async with http.get(runtime.telemetry.url + "/metrics") as response:
                return samples(await response.text())

        async def during_the_run() -> Any:
            got = await scrape()
            return got if value(got, "agentpool_api_connections_running") >= 1 else None

        busy = await until(during_the_run, 20.0, "a connection running for the pool")

        async def all_succeeded() -> bool:
            return all([await phase(kube_api, n) == "Succeeded" for n in names])

        await until(all_succeeded, 20.0, "every step to succeed")
        final = await scrape()
        async with http.get(cluster.url + "/sandbox/v1/stats") as response:
            stats = await response.json()

    assert value(busy, "agentpool_api_connections_limit") == LIMIT
    assert 1 <= value(busy, "agentpool_api_connections_running") <= LIMIT
    sessions = stats["exec"]["byPool"][POOL]["opened"]
    assert value(final, "agentpool_exec_sessions_total") == sessions
    assert sessions < len(names)
    assert value(final, "agentpool_steps_total", phase="Succeeded") == len(names)
    peak = stats["connections"]["byPool"][POOL]["byClient"][USER_AGENT]["peak"]
    assert 1 <= peak <= LIMIT
