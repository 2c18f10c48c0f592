"""The session wire protocol: the driver program, step messages and the frame parser (pure).

One exec into an agent container runs the constant `BOOTSTRAP_COMMAND`. Everything else
travels over stdin, so no script, env value or nonce ever appears in the exec URL or in a
process argument list:

1. The bootstrap reads the driver program line by line with the `read` builtin (which reads a
   pipe byte by byte, so it never consumes input meant for later) up to a `#end` line and
   `eval`s it. The driver then reads the session nonce as one line.
2. Each message is one header line. A `run` header announces two raw payloads of stated byte
   lengths (the launcher and the script). The driver copies them with `dd bs=REMAINING count=1`
   in a loop: `count=1` is one read(2) of at most REMAINING bytes, so dd never reads past the
   payload, and raw bytes need no encoding (256 KiB arrive in a few reads, no octal or base64).
3. The driver answers with frames on stdout, all written by one process (the pump), so frames
   never interleave. A frame is one header line `<nonce> <type> <step-id> <fields...>`; an
   output frame `O` is followed by exactly `<len>` raw bytes. Step output never reaches the
   session's stdout directly: it goes to a file in the container and the pump copies byte ranges
   of that file into length-prefixed frames, so no step output can forge a frame.

In the container every step has a directory `<state>/<step-id>`: `<state>` is the container's
`$AGENTPOOL_STATE_DIR` if set, else the directory the operator sends on the line after the nonce
(its `agent_state_dir` setting), else `${TMPDIR:-/tmp}/.agentpool`. The step directory holds:
`started` (created with noclobber by the step's keeper:
the idempotent start marker, holding the keeper pid), `launch` and `script`, `out` (stdout and
stderr merged, in write order), `pid` (the step's process group id), `cancel` (a cancel
request), `halt` (the keeper is stopping the step: cancel or timeout), `setup` (what kept the
script from starting: `shell` or `workdir`), `rc` (`<exit-code> <reason>`, one short write
when the step ended; readers wait for it to be non-empty).

A keeper process, detached with `setsid` (util-linux and busybox both have it), starts the step
in its own session/process group, waits for it and writes `rc`; it also enforces the timeout
(TERM to the group, KILL after a grace period). It shares no descriptor with the session, so the
step survives a dropped session or an operator restart. Without `setsid` the step still runs
but is only as detached as the shell allows; `H` reports which mode is in effect.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources

PROTOCOL_VERSION = 1
DEFAULT_SHELL = "/bin/sh"
DEFAULT_GRACE_SECONDS = 5
MAX_HEADER = 512
STEP_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
NONCE = re.compile(r"[0-9a-f]{16,64}")

# Constant: no user data, safe to appear in the exec URL.
BOOTSTRAP = 'p=;while IFS= read -r l;do [ "$l" = "#end" ]&&break;p="$p$l\n";done;eval "$p"'
BOOTSTRAP_COMMAND: tuple[str, ...] = ("/bin/sh", "-c", BOOTSTRAP.replace("\\n", "\n"))


def shell_program(package: str, name: str) -> str:
    """A `.sh` file shipped in `package`, without its comment lines: they explain the code to
    its readers, and need not travel to every agent in every session or exec URL."""
    text = resources.files(package).joinpath(name).read_text(encoding="utf-8")
    return "".join(line for line in text.splitlines(True) if not line.lstrip().startswith("#"))


def _script(name: str) -> str:
    return shell_program(__name__.rpartition(".")[0], name)


# The keeper (keeper.sh): started once per step, detached from the session. The driver
# (driver.sh): a reader of the session's stdin and a pump, the only writer of frames. Both are
# POSIX sh files shipped with the package and checked by shellcheck (`make lint`).
_KEEPER = _script("keeper.sh")
# The keeper is stored once per container under a name derived from its text, so a newer
# operator never runs an older keeper left behind in a long-lived container.
_KEEPER_ID = hashlib.sha256(_KEEPER.encode()).hexdigest()[:16]
_KEEPER_END = "AGENTPOOL_KEEPER"
if f"\n{_KEEPER_END}\n" in f"\n{_KEEPER}" or "\n#end\n" in f"\n{_KEEPER}":
    raise RuntimeError("keeper.sh holds a line that would end its here-document early")
# What driver.sh expects to be defined before it: the protocol version, the keeper's id, and
# `agentpool_keeper`, which prints the keeper's text (a quoted here-document: no expansion).
DRIVER = (
    f"AGENTPOOL_PROTOCOL={PROTOCOL_VERSION}\n"
    f"AGENTPOOL_KEEPER_ID={_KEEPER_ID}\n"
    f"agentpool_keeper() {{\ncat <<'{_KEEPER_END}'\n{_KEEPER}{_KEEPER_END}\n}}\n"
    + _script("driver.sh")
)


class ProtocolError(Exception):
    """The driver's output does not follow the protocol (wrong nonce, bad header)."""


class StepRequestError(ValueError):
    """A step request cannot be encoded (bad id, env name, NUL in a value...)."""


@dataclass(frozen=True)
class StepRequest:
    """One step to run in a session."""

    step_id: str
    script: bytes
    shell: str = DEFAULT_SHELL
    env: Mapping[str, str] = field(default_factory=dict)
    working_dir: str | None = None
    timeout: int | None = None  # whole seconds; None or 0: no timeout
    # The build's workspace, `<agent>/<build>` under the state dir's `.ws`: its `work` is the
    # step's working directory (a relative working_dir is taken inside it), its `tmp` the
    # step's TMPDIR. None: the container's own working directory, shared by every build.
    workspace: str | None = None
    grace: int = DEFAULT_GRACE_SECONDS


def _quote(value: str) -> str:
    if "\0" in value:
        raise StepRequestError("NUL byte in a value")
    return "'" + value.replace("'", "'\\''") + "'"


def check_step_id(step_id: str) -> None:
    if not STEP_ID.fullmatch(step_id):
        raise StepRequestError(f"invalid step id {step_id!r}")


def check_workspace(workspace: str) -> None:
    agent, _, build = workspace.partition("/")
    if not (STEP_ID.fullmatch(agent) and STEP_ID.fullmatch(build)):
        raise StepRequestError(f"invalid workspace {workspace!r}: want <agent>/<build>")


def build_launcher(request: StepRequest) -> bytes:
    """The small sh program that sets cwd and env, then execs the step's shell on its script."""
    # A cancel or timeout that lands while the keeper forks the step finds no process group
    # yet and its TERM may be swallowed: `halt`, made by the keeper before it signals, stops
    # the step (its group exists by now). Not `cancel`: the driver makes that file before it
    # signals the keeper, and a launcher acting on it in between ends the step without the
    # keeper knowing why (rc `143 exit`); the keeper alone decides a step was stopped.
    # The launcher holds env values: its name goes at once (sh keeps reading the open file),
    # so no env value of a step stays on the agent's disk while it runs or after.
    lines = ['rm -f "$1/launch"', '[ -e "$1/halt" ] && exit 143']
    if request.workspace:
        check_workspace(request.workspace)
        # `$1` is the step's directory in the state dir: the workspace is its sibling's child.
        lines.append(
            f'w="${{1%/*}}/.ws/{request.workspace}"; '
            '{ [ -d "$w/tmp" ] || mkdir -p -- "$w/work" "$w/tmp"; } && cd -- "$w/work" || '
            '{ echo agentpool: cannot create or enter the build workspace "$w" >&2; '
            'echo workdir >"$1/setup"; exit 126; }'
        )
        lines.append("TMPDIR=$w/tmp; export TMPDIR")
    # A setup failure is named in `setup` for the keeper (the step's reason), and explained
    # in the step's output; the exit code alone could be the script's own.
    if request.working_dir:
        # Created when missing, as the container runtime does for a container's workingDir;
        # mkdir's or cd's own complaint stays in the step's output: it says why.
        wd = _quote(request.working_dir)
        lines.append(
            f"{{ [ -d {wd} ] || mkdir -p -- {wd}; }} && cd -- {wd} || "
            f"{{ echo agentpool: cannot create or enter workingDir {wd} >&2; "
            f'echo workdir >"$1/setup"; exit 126; }}'
        )
    for name, value in request.env.items():
        if not ENV_NAME.fullmatch(name):
            raise StepRequestError(f"invalid env name {name!r}")
        lines.append(f"{name}={_quote(value)}; export {name}")
    shell = _quote(request.shell or DEFAULT_SHELL)
    # After the env: a shell named without a path is looked up in the step's own PATH.
    found = f"[ -f {shell} ] && [ -x {shell} ]" if "/" in shell else f"command -v {shell}"
    lines.append(
        f"{found} >/dev/null 2>&1 || {{ echo agentpool: no executable shell {shell} in this "
        f'container >&2; echo shell >"$1/setup"; exit 127; }}'
    )
    lines.append(f'exec {shell} "$1/script"')
    # The script bytes follow the launcher in the same file; sh never parses past here.
    lines.append("exit 127")
    return ("\n".join(lines) + "\n").encode()


def build_hello(nonce: str, state_dir: str | None = None) -> bytes:
    """Driver program, nonce and state dir (empty: the driver's default): the first bytes
    written to a session's stdin."""
    if not NONCE.fullmatch(nonce):
        raise StepRequestError("nonce must be 16-64 lowercase hex digits")
    state = state_dir or ""
    if state and (not state.startswith("/") or "\n" in state or "\0" in state):
        raise StepRequestError(f"state dir must be an absolute path on one line: {state!r}")
    return DRIVER.encode() + b"\n#end\n" + nonce.encode() + b"\n" + state.encode() + b"\n"


def build_run(request: StepRequest, offset: int = 0) -> bytes:
    """Start the step unless it was started before, and stream its output from `offset`."""
    check_step_id(request.step_id)
    launcher = build_launcher(request)
    timeout = max(0, int(request.timeout or 0))
    header = (
        f"run {request.step_id} {int(offset)} {timeout} {max(0, int(request.grace))} "
        f"{len(launcher)} {len(launcher) + len(request.script)}\n"
    )
    return header.encode() + launcher + request.script


def build_resume(step_id: str, offset: int) -> bytes:
    check_step_id(step_id)
    return f"resume {step_id} {int(offset)}\n".encode()


def build_cancel(step_id: str) -> bytes:
    check_step_id(step_id)
    return f"cancel {step_id}\n".encode()


def build_forget(step_id: str) -> bytes:
    """Remove a finished step's files from the container (nothing happens while it runs)."""
    check_step_id(step_id)
    return f"forget {step_id}\n".encode()


def build_clean(agent: str, keep: str | None = None) -> bytes:
    """Remove the agent's build workspaces, all but `keep` (a build's workspace name)."""
    check_step_id(agent)
    if keep is not None:
        check_step_id(keep)
    return f"clean {agent} {keep or '-'}\n".encode()


BYE = b"bye\n"
QUIT = b"quit\n"


# Events produced by the parser.
@dataclass(frozen=True)
class Hello:
    version: int
    mode: str  # "setsid" when steps get their own session and process group


@dataclass(frozen=True)
class Started:
    step_id: str
    pid: int


@dataclass(frozen=True)
class Output:
    step_id: str
    offset: int
    data: bytes


@dataclass(frozen=True)
class Finished:
    step_id: str
    exit_code: int  # -1 when lost
    total_bytes: int
    reason: str  # exit | timeout | cancelled | lost | shell | workdir (the script never started)


@dataclass(frozen=True)
class Unknown:
    """A resume asked for a step that was never started in this container."""

    step_id: str


@dataclass(frozen=True)
class CancelAck:
    step_id: str
    delivered: bool  # False: nothing running to cancel


@dataclass(frozen=True)
class DriverError:
    step_id: str
    code: str


@dataclass(frozen=True)
class Goodbye:
    pass


Event = Hello | Started | Output | Finished | Unknown | CancelAck | DriverError | Goodbye


class FrameParser:
    """Incremental demultiplexer of the driver's stdout; output bytes are passed through as they
    arrive, so a large chunk never has to be buffered whole."""

    def __init__(self, nonce: str) -> None:
        self._nonce = nonce.encode()
        self._buf = bytearray()
        self._pending: tuple[str, int, int] | None = None  # step, next offset, bytes left

    def feed(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        self._buf += data
        while self._buf:
            if self._pending is not None:
                step_id, offset, left = self._pending
                take = bytes(self._buf[:left])
                del self._buf[: len(take)]
                events.append(Output(step_id, offset, take))
                left -= len(take)
                self._pending = (step_id, offset + len(take), left) if left else None
                continue
            end = self._buf.find(b"\n")
            if end < 0:
                if len(self._buf) > MAX_HEADER:
                    raise ProtocolError("frame header too long")
                break
            line = bytes(self._buf[:end])
            del self._buf[: end + 1]
            event = self._header(line)
            if event is not None:
                events.append(event)
        return events

    def _header(self, line: bytes) -> Event | None:
        parts = line.split(b" ")
        if len(parts) < 3 or parts[0] != self._nonce:
            raise ProtocolError(f"bad frame header {line[:80]!r}")
        try:
            kind = parts[1].decode("ascii")
            step_id = parts[2].decode("ascii")
            fields = [p.decode("ascii") for p in parts[3:]]
            if kind == "O":
                offset, length = int(fields[0]), int(fields[1])
                if length > 0:
                    self._pending = (step_id, offset, length)
                return None
            if kind == "S":
                return Started(step_id, int(fields[0]))
            if kind == "F":
                return Finished(step_id, int(fields[0]), int(fields[1]), fields[2])
            if kind == "H":
                return Hello(int(fields[0]), fields[1])
            if kind == "U":
                return Unknown(step_id)
            if kind == "C":
                return CancelAck(step_id, fields[0] == "1")
            if kind == "E":
                return DriverError(step_id, fields[0] if fields else "")
            if kind == "B":
                return Goodbye()
        except (IndexError, ValueError, UnicodeDecodeError) as exc:
            raise ProtocolError(f"bad frame header {line[:80]!r}") from exc
        raise ProtocolError(f"unknown frame type {line[:80]!r}")
