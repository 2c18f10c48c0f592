"""The operator's watches ask the API server for a timeout in whole seconds, as the API takes it."""

from __future__ import annotations

import logging
import re
from typing import Any

import aiohttp

from agentpool.config import Config
from agentpool_sandbox.cluster import Sandbox

# `GET /api/v1/...?...&watch=true HTTP/1.1` in aiohttp's access log of the sandbox.
WATCH = re.compile(r'"GET (?P<path>\S*[?&]watch=true\S*) HTTP')


async def test_watches_send_timeout_seconds_as_an_integer(
    cluster: Sandbox, start_operator: Any, operator_config: Config, until: Any, caplog: Any
) -> None:
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    # Watches closed early end their requests, so that the access log shows them.
    async with (
        aiohttp.ClientSession(cluster.url) as http,
        http.put("/sandbox/v1/faults", json={"closeWatchesAfterSeconds": 1}) as response,
    ):
        assert response.status == 200
    await start_operator(operator_config)

    def watches() -> list[str]:
        return [
            match["path"]
            for record in caplog.records
            if record.name == "aiohttp.access" and (match := WATCH.search(record.getMessage()))
        ]

    seen = await until(watches, 15, "a watch request in the sandbox's access log")
    assert all("timeoutSeconds=300&" in p or p.endswith("timeoutSeconds=300") for p in seen), seen
