"""A cancel is decided by the step's keeper alone, whatever moment the request lands in."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from agentpool.steps.protocol import StepRequest

# Stands in for the step shell: holds every launcher until the test opens the gate, then
# runs it with the container's own shell.
GATE_SHELL = """#!/bin/sh
case $1 in */launch) while [ ! -e "{gate}" ]; do sleep 0.01; done;; esac
exec "{shell}" "$@"
"""


@pytest.fixture
def container(container):
    """The shared container, with launchers held at a gate (`<root>/gate`)."""
    wrapper = container.root / "gated-sh"
    shell = container.env.get("AGENTPOOL_SH", "/bin/sh")
    wrapper.write_text(GATE_SHELL.format(gate=container.root / "gate", shell=shell))
    wrapper.chmod(0o755)
    return dataclasses.replace(container, env={**container.env, "AGENTPOOL_SH": str(wrapper)})


async def test_cancel_marker_seen_before_the_signal_still_ends_cancelled(
    open_session, container, until
) -> None:
    # The driver makes `cancel`, then signals the keeper; a launcher starting in between
    # must not end the step behind the keeper's back (it used to: rc `143 exit`).
    session, _ = await open_session()
    handle = await session.submit(StepRequest("long", b"echo go; sleep 30", timeout=3600))
    step_dir = container.state_dir / "long"
    # The keeper arms its timer (`t.t`) after its last look at `cancel`; from then on only
    # the driver's signal reaches it.
    await until((step_dir / "t.t").exists)
    (step_dir / "cancel").touch()
    (container.root / "gate").touch()
    await until(lambda: handle.tail == b"go\n" or handle.done())

    await session.cancel("long")
    async with asyncio.timeout(10):
        result = await handle.wait()

    assert (result.exit_code, result.reason, handle.tail) == (143, "cancelled", b"go\n")
