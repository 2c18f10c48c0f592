"""Step metrics on the operator's /metrics: results, sessions, steps per session, dispatch."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from step_client import STEPS_NAMESPACE, BuildSteps

from agentpool_sandbox.testing import eventually

# The in-process operators share one metrics registry: a pool name no other test uses.
POOL = f"{STEPS_NAMESPACE}/metered"


@pytest.fixture
def sandbox_time_scale() -> float:
    return 0.1


async def scrape(operator: Any) -> dict[tuple[str, str], float]:
    """Samples of the metered pool by (sample name, phase label)."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{operator.runtime.telemetry.url}/metrics") as response,
    ):
        text = await response.text()
    return {
        (sample.name, sample.labels.get("phase", "")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.labels.get("pool") == POOL and "le" not in sample.labels
    }


async def test_a_build_is_counted_by_result_session_and_dispatch_latency(
    operator: Any, buildsteps: BuildSteps
) -> None:
    await buildsteps.pool("metered", sessions={"linger": "0.2s"})
    await buildsteps.create("m1", "echo one", pool="metered", build="b", order=1)
    await buildsteps.create("m2", "exit 1", pool="metered", build="b", order=2)
    await buildsteps.create("m3", "echo three", pool="metered", build="b", order=3)
    await buildsteps.wait_final("m1", "m2", "m3")

    async def session_closed() -> dict[tuple[str, str], float] | None:
        samples = await scrape(operator)
        return samples if samples.get(("agentpool_session_steps_count", "")) else None

    samples = await eventually(session_closed, 10, "the session to close")

    assert samples[("agentpool_steps_total", "Succeeded")] == 1
    assert samples[("agentpool_steps_total", "Failed")] == 1
    assert samples[("agentpool_steps_total", "Skipped")] == 1
    assert samples[("agentpool_exec_sessions_total", "")] == 1
    assert samples[("agentpool_exec_sessions_open", "")] == 0
    assert samples[("agentpool_session_steps_sum", "")] == 2
    assert samples[("agentpool_step_dispatch_seconds_count", "")] == 2
    assert 0 < samples[("agentpool_step_dispatch_seconds_sum", "")] < 30
