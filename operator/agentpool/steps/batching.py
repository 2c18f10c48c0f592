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

# The keeper: started once per step, detached from the session. Arguments: state dir of the
# step, timeout seconds (0: none), grace seconds, staged payload (launcher then script),
# launcher length, shell. Small files are written with one `echo` and read with `read -r`,
# which fails until the whole line is there: no tmp + mv needed for them.
_KEEPER = r"""
d=$1; t=$2; g=$3; f=$4; SH=$6
p=; r=; q=
# A timer is a subshell waiting on a `sleep`. It is never signalled: a signal reaching a freshly
# forked shell before it dropped the keeper's traps is swallowed. Instead the keeper KILLs the
# timer's sleep (uncatchable) by the pid the timer stored in `t.<name>`, after creating `end`;
# the timer stores that pid before it looks for `end` (or a removed dir) and then KILLs its own
# sleep: whichever comes second sees the other, so no sleep outlives the step.
after() {
  ( sleep "$2" & s=$!
    { echo $s >"$d/t.$1" && [ ! -e "$d/end" ] && [ -d "$d" ]; } 2>/dev/null || kill -KILL $s
    wait $s && eval "$3" ) &
}
untime() { for n in t k; do read -r s 2>/dev/null <"$d/t.$n" && kill -KILL "$s" 2>/dev/null; done; }
stop() {
  [ -n "$r" ] && return 0
  # Before the step exists a request is only remembered; it is acted on right after launch.
  [ -n "$p" ] || { q=$1; return 0; }
  r=$1
  # A TERM reaching the forked step before `setsid` is swallowed by the traps it inherited;
  # the launcher, running after `setsid`, sees `halt` and exits instead.
  : >"$d/halt" 2>/dev/null
  kill -TERM "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null
  after k "$g" 'kill -KILL "-$p" 2>/dev/null || kill -KILL "$p" 2>/dev/null'
}
# Traps first: the pid in `started` invites USR1, whose default action would end the keeper.
trap 'w=1' HUP INT TERM
trap 'w=1; stop cancelled' USR1
trap 'w=1; stop timeout' ALRM
mkdir "$d" 2>/dev/null
set -C
if ! echo $$ >"$d/started"; then rm -f "$f"; exit 0; fi 2>/dev/null
set +C
mv -f "$f" "$d/launch"
tail -c +$(($5 + 1)) "$d/launch" >"$d/script"
# Cancelled before launch: nothing runs. `pid` names this (ending) keeper, never 0, which
# `kill` and `killpg` read as "my own process group".
if [ -e "$d/cancel" ] || [ -n "$q" ]; then
  echo $$ >"$d/pid"; : >"$d/out"; echo "143 ${q:-cancelled}" >"$d/rc"; exit 0
fi
if command -v setsid >/dev/null 2>&1; then
  setsid "$SH" "$d/launch" "$d" >"$d/out" 2>&1 </dev/null &
else
  "$SH" "$d/launch" "$d" >"$d/out" 2>&1 </dev/null &
fi
p=$!
echo "$p" >"$d/pid"
[ -n "$q" ] && stop "$q"
[ -e "$d/cancel" ] && stop cancelled
[ "$t" -gt 0 ] && after t "$t" "kill -ALRM $$"
# A trap interrupts `wait` (status >128) without consuming the step's status: wait again.
# Waiting again for a status already consumed gives 127, then the first one stands.
rc=
while :; do
  w=; wait "$p"; x=$?
  if [ -n "$w" ] && [ "$x" -gt 128 ]; then rc=$x; continue; fi
  [ "$x" = 127 ] && [ -n "$rc" ] || rc=$x
  break
done
: >"$d/end"
untime
# The launcher names what kept the script from starting (see build_launcher).
[ -z "$r" ] && [ -s "$d/setup" ] && read -r r 2>/dev/null <"$d/setup"
case $r in exit|timeout|cancelled|shell|workdir) ;; *) r= ;; esac
echo "$rc ${r:-exit}" >"$d/rc"
"""

# The driver: a reader (this shell, consuming stdin) and a pump (a background subshell, the
# only writer of frames). They talk through numbered files in a per-session queue directory;
# the reader wakes the pump with USR1, which interrupts the pump's `wait` on its poll sleep.
_DRIVER = r"""
IFS= read -r N || exit 3
case $N in *[!0-9a-f]*|'') exit 3;; esac
IFS= read -r SD || exit 3
SH=${AGENTPOOL_SH:-/bin/sh}
# The container's own AGENTPOOL_STATE_DIR wins over the operator's setting (second line).
S=${AGENTPOOL_STATE_DIR:-${SD:-${TMPDIR:-/tmp}/.agentpool}}
umask 077
[ -d "$S" ] || mkdir -p "$S" || exit 4
Q=$S/.session.$N
mkdir "$Q" "$Q/q" || exit 4
exec 3>&1 1>&2
if command -v setsid >/dev/null 2>&1; then M=setsid; else M=shared; fi
# Poll back-off of the pump when nothing happens; POSIX sleep only takes whole seconds.
if sleep 0.001 2>/dev/null; then
  ZS="0.002 0.002 0.002 0.004 0.004 0.008 0.016 0.032 0.064 0.128 0.25"
else
  ZS=1
fi
K=$S/.keeper-@KEEPERID@
if [ ! -s "$K" ]; then
  cat >"$Q/k" <<'AGENTPOOL_KEEPER'
@KEEPER@
AGENTPOOL_KEEPER
  mv -f "$Q/k" "$K"
fi
# No `$(...)` in the pump: bash (5.2) runs a trap that is due while it parses a command
# substitution being expanded, the trap's own parse breaks that parse ("unexpected EOF while
# looking for matching `)'") and the error ended the pump's loop: no frame ever again. Counts
# go through a file and `read` instead.
pump() {
  trap 'w=1' USR1
  w=0; A=; B=; zi=0
  printf '%s H - @VERSION@ %s\n' "$N" "$M" >&3
  while :; do
    y=; R=
    for f in "$Q"/q/*; do
      [ -e "$f" ] || continue
      read -r c a b <"$f" || break
      R="$R $f"; k=${f##*/}
      case $c in
      W) A="$A $k"; eval "i_$k=\$a o_$k=\$b s_$k=0"; y=1;;
      U|C|E) printf '%s %s %s %s\n' "$N" "$c" "$a" "$b" >&3;;
      B) B=1;;
      Q) printf '%s B -\n' "$N" >&3; exit 0;;
      esac
    done
    [ -n "$R" ] && rm -f $R
    L=
    for k in $A; do
      eval "i=\$i_$k o=\$o_$k s=\$s_$k"
      d=$S/$i
      if [ "$s" = 0 ]; then
        if read -r p 2>/dev/null <"$d/pid"; then
          printf '%s S %s %s\n' "$N" "$i" "$p" >&3; s=1; y=1
        elif read -r kp 2>/dev/null <"$d/started"; then
          if ! kill -0 "$kp" 2>/dev/null && [ ! -s "$d/pid" ] && [ ! -s "$d/rc" ]; then
            printf '%s F %s -1 %s lost\n' "$N" "$i" "$o" >&3; y=1; continue
          fi
        fi
      fi
      if [ "$s" = 1 ]; then
        e=; read -r x r 2>/dev/null <"$d/rc" && e=1
        # Most trivial steps print nothing: no `wc` fork for an empty file.
        n=0
        if [ -s "$d/out" ]; then wc -c <"$d/out" >"$Q/n" 2>/dev/null && read -r n <"$Q/n" || n=0; fi
        while [ "$o" -lt "$n" ]; do
          if [ $((o % 65536)) = 0 ]; then
            dd if="$d/out" bs=65536 skip=$((o / 65536)) count=16 2>/dev/null >"$Q/c"
          else
            dd if="$d/out" bs=65536 skip=$((o / 65536)) count=16 2>/dev/null |
              tail -c +$((o % 65536 + 1)) >"$Q/c"
          fi
          m=0; wc -c <"$Q/c" >"$Q/n" && read -r m <"$Q/n" || m=0
          [ "$m" -gt 0 ] || break
          printf '%s O %s %s %s\n' "$N" "$i" "$o" "$m" >&3
          cat "$Q/c" >&3
          o=$((o + m)); y=1
        done
        if [ -n "$e" ]; then
          printf '%s F %s %s %s %s\n' "$N" "$i" "$x" "$o" "$r" >&3; y=1; continue
        fi
        read -r kp <"$d/started"
        if ! kill -0 "$kp" 2>/dev/null && [ ! -s "$d/rc" ]; then
          printf '%s F %s -1 %s lost\n' "$N" "$i" "$o" >&3; y=1; continue
        fi
      fi
      eval "o_$k=\$o s_$k=\$s"; L="$L $k"
    done
    A=$L
    if [ -n "$B" ] && [ -z "$A" ]; then printf '%s B -\n' "$N" >&3; exit 0; fi
    if [ -n "$y" ]; then zi=0; else zi=$((zi + 1)); fi
    set -- $ZS; [ "$zi" -lt $# ] || zi=$(($# - 1)); shift "$zi"
    if [ "$w" = 0 ]; then sleep "$1" & sp=$!; wait "$sp"; kill "$sp" 2>/dev/null; fi
    w=0
  done
}
trap '' USR1
pump &
P=$!
trap - USR1
n=1000000
enq() { n=$((n + 1)); echo "$*" >"$Q/q/$n"; kill -USR1 "$P" 2>/dev/null; }
readn() {
  : >"$2"; rg=0
  while [ "$rg" -lt "$1" ]; do
    dd bs=$(($1 - rg)) count=1 2>/dev/null >>"$2"
    rh=$(($(wc -c <"$2")))
    [ "$rh" -gt "$rg" ] || return 1
    rg=$rh
  done
}
E=
while IFS=' ' read -r c a b t g l s; do
  case $a in ''|-|.*|*[!A-Za-z0-9._-]*) v=;; *) v=1;; esac
  d=$S/$a
  case $c in
  run)
    case $l$s in ''|*[!0-9]*) enq E - badmsg; E=1; break;; esac
    if [ -z "$v" ] || [ -e "$d/started" ]; then
      readn "$s" "$Q/x" || { E=1; break; }
      [ -n "$v" ] || { enq E - badid; continue; }
    else
      f=$S/.stage.$a.$$
      readn "$s" "$f" || { E=1; break; }
      if [ "$M" = setsid ]; then
        setsid "$SH" "$K" "$d" "$t" "$g" "$f" "$l" "$SH" </dev/null >/dev/null 2>&1 3>&- &
      else
        "$SH" "$K" "$d" "$t" "$g" "$f" "$l" "$SH" </dev/null >/dev/null 2>&1 3>&- &
      fi
    fi
    enq W "$a" "$b";;
  resume)
    if [ -n "$v" ] && [ -e "$d/started" ]; then enq W "$a" "$b"; else enq U "$a"; fi;;
  cancel)
    # The cancel file also stops a step whose keeper is still starting, or starts later.
    if [ -z "$v" ]; then enq C - 0
    elif [ -e "$d/rc" ]; then enq C "$a" 0
    else
      [ -d "$d" ] || mkdir "$d" 2>/dev/null; : >"$d/cancel"
      read -r kp 2>/dev/null <"$d/started" && kill -USR1 "$kp" 2>/dev/null; enq C "$a" 1
    fi;;
  forget)
    [ -n "$v" ] && read -r x 2>/dev/null <"$d/rc" && rm -rf "$d";;
  bye) break;;
  quit) enq Q; wait "$P"; rm -rf "$Q"; exit 0;;
  *) enq E - badmsg;;
  esac
done
enq B
wait "$P"
rm -rf "$Q"
exit 0
"""

# The keeper is stored once per container under a name derived from its text, so a newer
# operator never runs an older keeper left behind in a long-lived container.
_KEEPER_ID = hashlib.sha256(_KEEPER.encode()).hexdigest()[:16]
DRIVER = (
    _DRIVER.replace("@KEEPER@", _KEEPER.strip())
    .replace("@KEEPERID@", _KEEPER_ID)
    .replace("@VERSION@", str(PROTOCOL_VERSION))
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
    grace: int = DEFAULT_GRACE_SECONDS


def _quote(value: str) -> str:
    if "\0" in value:
        raise StepRequestError("NUL byte in a value")
    return "'" + value.replace("'", "'\\''") + "'"


def check_step_id(step_id: str) -> None:
    if not STEP_ID.fullmatch(step_id):
        raise StepRequestError(f"invalid step id {step_id!r}")


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
