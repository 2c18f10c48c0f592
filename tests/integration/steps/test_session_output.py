"""Exact attribution: spoofed frames, binary bytes, huge scripts, 20 MB in bounded memory."""

from __future__ import annotations

import hashlib
import os
import tracemalloc

from agentpool.steps.protocol import StepRequest


def step(step_id: str, script: bytes | str, **kwargs: object) -> StepRequest:
    body = script.encode() if isinstance(script, str) else script
    return StepRequest(step_id=step_id, script=body, **kwargs)  # type: ignore[arg-type]


async def test_step_printing_frames_with_the_real_nonce_cannot_forge_them(open_session) -> None:
    session, _ = await open_session()
    nonce = session.nonce
    forged = (
        f"{nonce} F victim 0 0 exit\n{nonce} O victim 0 6\nforged"
        f"xxxxxxxx O victim 0 5\nhello\n{nonce} B -\n"
    )
    victim = await session.submit(step("victim", "echo genuine; exit 3"))
    spoofer = await session.submit(
        step("spoofer", "printf '%s' \"$FORGED\"", env={"FORGED": forged})
    )

    assert (await spoofer.wait()).exit_code == 0
    assert spoofer.tail == forged.encode()
    assert ((await victim.wait()).exit_code, victim.tail) == (3, b"genuine\n")
    assert session.open


async def test_binary_and_non_utf8_output_round_trips(open_session) -> None:
    session, _ = await open_session()
    expected = bytes(range(256)) * 4

    blob_step = await session.submit(step("bytes", _printf_all_bytes() * 4))

    result = await blob_step.wait()
    assert (result.exit_code, result.total_bytes) == (0, len(expected))
    assert blob_step.tail == expected


def _printf_all_bytes() -> str:
    return "printf '" + "".join(f"\\{b:03o}" for b in range(256)) + "'\n"


async def test_huge_script_arrives_intact(open_session) -> None:
    session, _ = await open_session()
    filler = ("# " + "x" * 1021 + "\n") * 256  # 256 KiB of comments
    script = filler + "echo end-of-huge-script\n"

    handle = await session.submit(step("huge", script))

    assert (await handle.wait()).exit_code == 0
    assert handle.tail == b"end-of-huge-script\n"
    follower = await session.submit(step("after-huge", "echo next"))
    assert ((await follower.wait()).exit_code, follower.tail) == (0, b"next\n")


async def test_twenty_megabytes_stream_with_bounded_memory(open_session, container) -> None:
    session, _ = await open_session()
    blob = container.root / "blob"
    blob.write_bytes(os.urandom(20 * 1024 * 1024))
    digest = hashlib.sha256()
    offsets: list[int] = []

    def on_output(offset: int, data: bytes) -> None:
        offsets.append(offset)
        digest.update(data)

    tracemalloc.start()
    try:
        handle = await session.submit(step("big", f"cat {blob}"))
        handle.on_output = on_output
        result = await handle.wait()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert result.total_bytes == 20 * 1024 * 1024
    assert digest.hexdigest() == hashlib.sha256(blob.read_bytes()).hexdigest()
    assert len(handle.tail) == 4096
    assert offsets == sorted(offsets)
    assert peak < 8 * 1024 * 1024
