"""follow: the constant follow command run by a real POSIX shell, and what the status adds."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from agentpool.builds import StepView
from agentpool.follow import follow_command, lost_output

STEP_ID = "uid-1.1"
WITHIN = 20.0


@pytest.fixture
def step_dir(tmp_path: Path) -> Path:
    directory = tmp_path / STEP_ID
    directory.mkdir()
    return directory


def run(tmp_path: Path, offset: int, *, once: bool) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        follow_command(STEP_ID, offset, str(tmp_path), once=once),
        capture_output=True,
        timeout=WITHIN,
        check=False,
        env={"PATH": "/usr/bin:/bin"},
    )


def test_the_script_travels_as_an_argument_constant_and_the_step_id_as_data() -> None:
    command = follow_command("abc.2", 17, "/state", once=False)

    assert command[:2] == ["/bin/sh", "-c"]
    assert command[3:] == ["abc.2", "/state", "17", "follow"]
    assert "abc" not in command[2]


def test_once_copies_from_the_offset_to_the_end(tmp_path: Path, step_dir: Path) -> None:
    (step_dir / "out").write_bytes(b"hello\nworld\n")

    done = run(tmp_path, 6, once=True)

    assert (done.returncode, done.stdout) == (0, b"world\n")


def test_binary_output_passes_unchanged(tmp_path: Path, step_dir: Path) -> None:
    data = bytes(range(256)) * 4
    (step_dir / "out").write_bytes(data)

    assert run(tmp_path, 0, once=True).stdout == data


def test_once_without_output_exits_3(tmp_path: Path) -> None:
    assert run(tmp_path, 0, once=True).returncode == 3


def follow(tmp_path: Path, offset: int = 0) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        follow_command(STEP_ID, offset, str(tmp_path), once=False),
        stdout=subprocess.PIPE,
        env={"PATH": "/usr/bin:/bin"},
    )


def test_follow_waits_for_the_output_to_appear(tmp_path: Path) -> None:
    process = follow(tmp_path)
    assert process.stdout is not None
    try:
        step_dir = tmp_path / STEP_ID
        step_dir.mkdir()
        (step_dir / "out").write_bytes(b"late\n")
        assert process.stdout.readline() == b"late\n"
        (step_dir / "rc").write_text("0 exit\n")
        code = process.wait(WITHIN)
    finally:
        process.kill()
        process.wait()

    assert code == 0


def test_follow_keeps_what_it_opened_after_the_files_are_removed(
    tmp_path: Path, step_dir: Path
) -> None:
    # The operator forgets a step's files once its build moves on; the open file still reads.
    out = step_dir / "out"
    out.write_bytes(b"one\n")
    process = follow(tmp_path, offset=0)
    assert process.stdout is not None
    try:
        assert process.stdout.readline() == b"one\n"
        with out.open("ab") as appending:
            appending.write(b"two\n")
        (step_dir / "rc").write_text("0 exit\n")
        out.unlink()
        (step_dir / "rc").unlink()
        step_dir.rmdir()
        rest = process.stdout.read()
        code = process.wait(WITHIN)
    finally:
        process.kill()
        process.wait()

    assert (code, rest) == (0, b"two\n")


def test_follow_starts_at_the_offset(tmp_path: Path, step_dir: Path) -> None:
    (step_dir / "out").write_bytes(b"shown already|new\n")
    (step_dir / "rc").write_text("0 exit\n")

    process = follow(tmp_path, offset=len(b"shown already|"))
    assert process.stdout is not None
    rest = process.stdout.read()

    assert (process.wait(WITHIN), rest) == (0, b"new\n")


def test_follow_copies_what_is_appended_until_rc_is_written(tmp_path: Path, step_dir: Path) -> None:
    out = step_dir / "out"
    out.write_bytes(b"one\n")
    process = follow(tmp_path)
    assert process.stdout is not None
    try:
        # The first line arrives while the step is still running (no rc yet).
        assert process.stdout.readline() == b"one\n"
        with out.open("ab") as appending:
            appending.write(b"two\n")
        assert process.stdout.readline() == b"two\n"
        with out.open("ab") as appending:
            appending.write(b"three\n")
        (step_dir / "rc").write_text("0 exit\n")
        rest = process.stdout.read()
        code = process.wait(WITHIN)
    finally:
        process.kill()
        process.wait()

    assert (code, rest) == (0, b"three\n")


def step(tail: str, agent: str = "pod-1") -> tuple[StepView, dict[str, Any]]:
    body = {
        "metadata": {"name": "s", "uid": "u"},
        "spec": {"pool": "p", "script": "x"},
        "status": {"phase": "Succeeded", "agent": agent, "logTail": tail, "logBytes": 100},
    }
    return StepView.from_body(body), body


def test_lost_output_says_when_the_tail_is_the_whole_output() -> None:
    view, body = step("all of it\n")
    body["status"]["logBytes"] = len(b"all of it\n")

    shown, note = lost_output(view, body, 0, gone=False)

    assert shown == b"all of it\n"
    assert note.endswith(": printed the whole output, which status.logTail holds")


def test_lost_output_prints_the_whole_tail_when_nothing_was_shown() -> None:
    view, body = step("the last forty bytes of the step's output")

    shown, note = lost_output(view, body, 0, gone=True)

    assert shown == b"the last forty bytes of the step's output"
    assert note == (
        "agent pod-1 is gone: printed the last 41 of 100 bytes of output, "
        "which status.logTail keeps"
    )


def test_lost_output_adds_only_what_follows_the_bytes_shown() -> None:
    view, body = step("0123456789")  # bytes 90..99 of the output

    shown, note = lost_output(view, body, 95, gone=True)

    assert shown == b"56789"
    assert note == "agent pod-1 is gone: printed the rest of the output from status.logTail"


def test_lost_output_says_which_bytes_are_lost() -> None:
    view, body = step("0123456789")

    shown, note = lost_output(view, body, 40, gone=False)

    assert shown == b"0123456789"
    assert "(bytes 40 to 90 are lost)" in note
    assert "--agent-state-dir" in note


def test_nothing_is_lost_when_everything_was_shown() -> None:
    view, body = step("0123456789")

    assert lost_output(view, body, 100, gone=True) == (b"", "")
