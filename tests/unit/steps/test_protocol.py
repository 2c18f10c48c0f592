"""The pure half of the session protocol: messages built for the driver, frames parsed back."""

from __future__ import annotations

import pytest

from agentpool.steps import protocol
from agentpool.steps.protocol import (
    CancelAck,
    Finished,
    FrameParser,
    Goodbye,
    Hello,
    Output,
    ProtocolError,
    Started,
    StepRequest,
    StepRequestError,
    Unknown,
)

NONCE = "0123456789abcdef0123456789abcdef"


def frame(kind: str, step_id: str, *fields: object, data: bytes = b"") -> bytes:
    return " ".join([NONCE, kind, step_id, *map(str, fields)]).encode() + b"\n" + data


def collect(parser: FrameParser, stream: bytes, piece: int) -> list[protocol.Event]:
    events: list[protocol.Event] = []
    for i in range(0, len(stream), piece):
        events += parser.feed(stream[i : i + piece])
    return events


def merged_output(events: list[protocol.Event]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for event in events:
        if isinstance(event, Output):
            out[event.step_id] = out.get(event.step_id, b"") + event.data
    return out


def test_frames_round_trip_in_any_split() -> None:
    payload = b"line one\n" + NONCE.encode() + b" F other 0 0 exit\n\xff\xfe\x00"
    stream = (
        frame("H", "-", 1, "setsid")
        + frame("S", "a", 42)
        + frame("O", "a", 0, len(payload), data=payload)
        + frame("F", "a", 3, len(payload), "exit")
        + frame("B", "-")
    )

    for piece in (1, 7, len(stream)):
        events = collect(FrameParser(NONCE), stream, piece)
        assert [e for e in events if not isinstance(e, Output)] == [
            Hello(1, "setsid"),
            Started("a", 42),
            Finished("a", 3, len(payload), "exit"),
            Goodbye(),
        ]
        assert merged_output(events) == {"a": payload}


def test_output_offsets_advance_within_a_split_chunk() -> None:
    stream = frame("O", "a", 10, 6, data=b"abcdef")

    events = collect(FrameParser(NONCE), stream, len(stream) - 2)

    assert events == [Output("a", 10, b"abcd"), Output("a", 14, b"ef")]


def test_header_with_wrong_nonce_is_a_protocol_error() -> None:
    forged = frame("F", "a", 0, 0, "exit").replace(NONCE.encode(), b"f" * 32)

    with pytest.raises(ProtocolError):
        FrameParser(NONCE).feed(forged)


def test_marker_text_inside_a_chunk_is_data_not_a_frame() -> None:
    inner = frame("F", "victim", 0, 0, "exit") + frame("O", "victim", 0, 3, data=b"bad")
    stream = frame("O", "spoofer", 0, len(inner), data=inner) + frame("U", "victim")

    events = FrameParser(NONCE).feed(stream)

    assert merged_output(events) == {"spoofer": inner}
    assert events[-1] == Unknown("victim")


def test_empty_output_and_other_frames() -> None:
    stream = frame("O", "a", 0, 0) + frame("C", "a", 1) + frame("F", "a", 0, 0, "cancelled")

    assert FrameParser(NONCE).feed(stream) == [
        CancelAck("a", True),
        Finished("a", 0, 0, "cancelled"),
    ]


@pytest.mark.parametrize(
    "line",
    [b"garbage\n", NONCE.encode() + b" Z a\n", NONCE.encode() + b" F a x y z\n", b"x" * 600],
)
def test_malformed_input_is_rejected(line: bytes) -> None:
    with pytest.raises(ProtocolError):
        FrameParser(NONCE).feed(line)


def test_run_message_carries_launcher_and_script_by_length() -> None:
    script = b"\x00binary\n" * 40000  # ~300 KiB, any bytes
    request = StepRequest("uid-1", script, env={"A": "x"}, timeout=9, grace=2)

    message = protocol.build_run(request, offset=5)

    header, rest = message.split(b"\n", 1)
    words = header.split()
    assert words[:5] == [b"run", b"uid-1", b"5", b"9", b"2"]
    launcher_len, payload_len = int(words[5]), int(words[6])
    assert rest[:launcher_len] == protocol.build_launcher(request)
    assert rest[launcher_len:] == script
    assert payload_len == len(rest)


def test_launcher_quotes_values_and_execs_the_shell() -> None:
    request = StepRequest("s", b"", shell="/bin/bash", env={"V": "a'b $x\n`y`"}, working_dir="/w d")

    launcher = protocol.build_launcher(request).decode()

    assert "{ [ -d '/w d' ] || mkdir -p -- '/w d'; } && cd -- '/w d' ||" in launcher
    assert "[ -f '/bin/bash' ] && [ -x '/bin/bash' ] >/dev/null 2>&1 ||" in launcher
    assert "V='a'\\''b $x\n`y`'; export V" in launcher
    assert launcher.endswith("exec '/bin/bash' \"$1/script\"\nexit 127\n")


@pytest.mark.parametrize(
    "request_",
    [
        StepRequest("../etc", b""),
        StepRequest("a b", b""),
        StepRequest("ok", b"", env={"1BAD": "x"}),
        StepRequest("ok", b"", env={"A": "nul\0"}),
    ],
)
def test_invalid_requests_are_refused(request_: StepRequest) -> None:
    with pytest.raises(StepRequestError):
        protocol.build_run(request_)


def test_bootstrap_is_constant_and_carries_no_user_data() -> None:
    hello = protocol.build_hello(NONCE)

    assert protocol.BOOTSTRAP_COMMAND[:2] == ("/bin/sh", "-c")
    assert NONCE not in "".join(protocol.BOOTSTRAP_COMMAND)
    assert hello.endswith(b"\n#end\n" + NONCE.encode() + b"\n\n")
    assert b"\n#end\n" not in protocol.DRIVER.encode()


def test_state_dir_travels_after_the_nonce() -> None:
    hello = protocol.build_hello(NONCE, "/var/agent state")

    assert hello.endswith(b"\n#end\n" + NONCE.encode() + b"\n/var/agent state\n")
    assert "/var/agent state" not in "".join(protocol.BOOTSTRAP_COMMAND)
    with pytest.raises(StepRequestError):
        protocol.build_hello(NONCE, "relative/dir")
    with pytest.raises(StepRequestError):
        protocol.build_hello(NONCE, "/two\nlines")


def test_nonce_must_be_hex() -> None:
    with pytest.raises(StepRequestError):
        protocol.build_hello("not-hex; rm -rf /")
