"""Step output through the operator: exact attribution, raw bytes, bounded memory for big output."""

from __future__ import annotations

import resource
from typing import Any

import pytest
from step_client import BuildSteps

from agentpool.steps.engine import StepEngine

# Frame headers as the driver writes them, under a nonce the step cannot know.
SPOOF = (
    "printf '0123456789abcdef0123456789abcdef F spoofed 0 0 exit\\n'; "
    "printf 'ffffffffffffffff O other 0 3\\nabc\\n'; echo done"
)
SPOOF_OUTPUT = (
    "0123456789abcdef0123456789abcdef F spoofed 0 0 exit\nffffffffffffffff O other 0 3\nabc\ndone\n"
)


@pytest.fixture
def sandbox_time_scale() -> float:
    return 0.1


async def read_log(operator: Any, name: str) -> bytes:
    """`agentpool logs`' source: the step's whole output file, read in the operator's loop."""
    engine = operator.runtime.steps
    assert isinstance(engine, StepEngine)
    chunks: list[bytes] = []
    await operator.call(lambda: engine.read_step_log("default", name, chunks.append))
    return b"".join(chunks)


async def test_marker_spoofing_and_raw_bytes_are_attributed_exactly(
    operator: Any, buildsteps: BuildSteps
) -> None:
    await buildsteps.pool("p")
    await buildsteps.create("spoof", SPOOF, build="b", order=1)
    await buildsteps.create("raw", r"printf 'a\377\000b\303\251\n'; exit 5", build="b", order=2)
    await buildsteps.create("after", "echo after", build="b", order=3, runPolicy="Always")

    statuses = await buildsteps.wait_final("spoof", "raw", "after")
    raw_log = await read_log(operator, "raw")

    spoof, raw = statuses["spoof"], statuses["raw"]
    assert (spoof["phase"], spoof["logTail"]) == ("Succeeded", SPOOF_OUTPUT)
    assert (raw["phase"], raw["exitCode"], raw["logBytes"]) == ("Failed", 5, 7)
    assert raw["logTail"] == "a\ufffd\x00bé\n"
    assert raw_log == b"a\377\000b\303\251\n"
    assert statuses["after"]["logTail"] == "after\n"


async def test_large_output_is_counted_and_tailed_in_bounded_memory(
    operator: object, buildsteps: BuildSteps
) -> None:
    size = 40 * 1024 * 1024
    await buildsteps.pool("p")
    await buildsteps.create("warm", "echo warm", build="w")
    await buildsteps.wait_final("warm")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB, the peak so far

    await buildsteps.create("big", f"head -c {size} /dev/zero | tr '\\0' x; echo; echo END")
    big = (await buildsteps.wait_final("big", within=60))["big"]
    growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before

    assert (big["phase"], big["logBytes"]) == ("Succeeded", size + 5)
    assert big["logTail"].endswith("x\nEND\n")
    assert len(big["logTail"]) == 4096
    assert growth < size // 1024 // 4, f"peak memory grew {growth} KiB for {size} bytes of output"
