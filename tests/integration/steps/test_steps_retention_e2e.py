"""Finished steps are deleted ttlSecondsAfterFinished after they finished (the step's own, else
the pool's default), through the operator on the sandbox; others are kept."""

from __future__ import annotations

from typing import Any

import pytest
from step_client import BuildSteps

from agentpool_sandbox.testing import eventually


@pytest.fixture
def sandbox_time_scale() -> float:
    return 0.1


async def test_finished_steps_are_deleted_after_their_ttl_and_the_others_kept(
    operator: Any, buildsteps: BuildSteps
) -> None:
    await buildsteps.pool("p", steps={"ttlSecondsAfterFinished": 1})
    await buildsteps.pool("keeps")
    await buildsteps.create("own-ttl", "echo a", ttlSecondsAfterFinished=0)
    await buildsteps.create("pool-ttl", "exit 2")
    await buildsteps.create("kept", "echo c", pool="keeps")
    finished = await buildsteps.wait_final("pool-ttl", "kept")  # own-ttl may be gone already

    async def gone() -> bool:
        return all([await buildsteps.status(n) == {} for n in ("own-ttl", "pool-ttl")])

    await eventually(gone, 20, "the steps past their ttl to be deleted")

    assert finished["pool-ttl"]["phase"] == "Failed"
    assert (await buildsteps.status("kept"))["phase"] == "Succeeded"
