"""Find and kill every host process that belongs to a pod, however it detached.

Process groups are not enough: a command can `setsid` into a new session (step keepers do), and
a group leader's background children outlive it. So every container process starts with marker
variables in its environment, which every descendant inherits, and removal scans `/proc/*/environ`
(Linux) for them until no marked process is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Iterable, Mapping
from pathlib import Path

POD_VARIABLE = "SANDBOX_POD_UID"
RUNTIME_VARIABLE = "SANDBOX_RUNTIME"
_PROC = Path("/proc")
# Without procfs (not Linux) only process groups are killed.
_HAS_PROC = _PROC.is_dir()
_ROUNDS = 200
_ROUND_PAUSE = 0.01


def marker(runtime: str, pod_uid: str | None = None) -> dict[str, str]:
    """The environment entries that mark a process as the runtime's (and the pod's, if given)."""
    entries = {RUNTIME_VARIABLE: runtime}
    if pod_uid is not None:
        entries[POD_VARIABLE] = pod_uid
    return entries


def carries(environ: bytes, entries: Mapping[str, str]) -> bool:
    """Whether a NUL-separated environment block holds every one of `entries` exactly."""
    present = set(environ.split(b"\0"))
    return all(f"{name}={value}".encode() in present for name, value in entries.items())


def alive(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie waiting to be reaped."""
    # A zombie has released its memory (its environ reads empty) and cannot be killed again.
    try:
        stat = (_PROC / str(pid) / "stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] not in (b"Z", b"X")


def _pids() -> Iterable[int]:
    with contextlib.suppress(OSError):
        for entry in os.scandir(_PROC):
            if entry.name.isdigit():
                yield int(entry.name)


def marked(entries: Mapping[str, str]) -> list[int]:
    """Live processes (other than this one) whose environment carries `entries`."""
    found = []
    own = os.getpid()
    for pid in _pids():
        if pid == own:
            continue
        try:
            environ = (_PROC / str(pid) / "environ").read_bytes()
        except OSError:
            continue
        if carries(environ, entries) and alive(pid):
            found.append(pid)
    return found


def kill_marked(entries: Mapping[str, str]) -> int:
    """SIGKILL every marked process once; returns how many were signalled."""
    pids = marked(entries)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return len(pids)


async def reap(entries: Mapping[str, str]) -> bool:
    """Kill marked processes until none is left (a dying one may fork first); True when clean.

    Bounded: a process that keeps forking faster than it is killed is given up on after a while.
    """
    if not _HAS_PROC:
        return True
    for _ in range(_ROUNDS):
        if await asyncio.to_thread(kill_marked, entries) == 0:
            return True
        await asyncio.sleep(_ROUND_PAUSE)
    return not await asyncio.to_thread(marked, entries)
