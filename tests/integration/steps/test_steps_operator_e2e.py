"""BuildSteps through the whole operator (kopf, pool controller, step engine) on the sandbox."""

from __future__ import annotations

import pytest
from step_client import BuildSteps


@pytest.fixture
def sandbox_time_scale() -> float:
    return 0.1


async def test_steps_succeed_fail_and_skip_on_a_warm_agent(
    operator: object, buildsteps: BuildSteps
) -> None:
    await buildsteps.pool("p")
    await buildsteps.create("ok", "echo hello; echo oops >&2", build="b", order=1)
    await buildsteps.create("bad", "echo failing; exit 3", build="b", order=2)
    await buildsteps.create("later", "echo never", build="b", order=3)

    statuses = await buildsteps.wait_final("ok", "bad", "later")

    ok, bad, later = statuses["ok"], statuses["bad"], statuses["later"]
    assert (ok["phase"], ok["exitCode"], ok["logTail"]) == ("Succeeded", 0, "hello\noops\n")
    assert ok["startedAt"] <= ok["finishedAt"]
    assert ok["agent"].startswith("p-")
    assert (bad["phase"], bad["exitCode"], bad["reason"]) == ("Failed", 3, "ScriptFailed")
    assert (later["phase"], later["reason"]) == ("Skipped", "PreviousStepFailed")
