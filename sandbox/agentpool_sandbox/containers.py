"""Containers as local process groups in per-pod, per-container directories.

Layout under `<state_dir>/pods/<namespace>/<pod>/`: one directory per container (its HOME, TMPDIR
and default working directory) and `<container>.log` beside it with the main process's output
(container names are DNS labels, so no name can collide with a `.log` file). Every process runs
in its own session so that deleting the pod can kill the whole group, and carries the reaper's
marker variables so that removal also finds what detached into a session of its own (`setsid`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import os
import pty
import re
import shutil
import signal
import struct
import termios
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentpool_sandbox import reaper

_PR_SET_PDEATHSIG = 1
_VAR_REFERENCE = re.compile(r"\$\((?P<name>[A-Za-z_][A-Za-z0-9_.-]*)\)|\$\$")
_FIELD_PATH = re.compile(r"^metadata\.(?P<kind>labels|annotations)\['(?P<key>[^']+)'\]$")


class PodGone(LookupError):
    """The pod was removed; nothing may start in it any more."""


def _die_with_parent() -> None:
    """Backstop for a sandbox killed hard: the kernel SIGKILLs direct children (Linux only)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: unknown references stay as written, `$$` escapes `$`."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match["name"], match.group(0))

    return _VAR_REFERENCE.sub(replace, text)


def _field_value(pod: Mapping[str, Any], path: str) -> str | None:
    metadata = pod.get("metadata") or {}
    simple: dict[str, Any] = {
        "metadata.name": metadata.get("name"),
        "metadata.namespace": metadata.get("namespace"),
        "metadata.uid": metadata.get("uid"),
        "spec.nodeName": (pod.get("spec") or {}).get("nodeName"),
        "spec.serviceAccountName": (pod.get("spec") or {}).get("serviceAccountName"),
        "status.podIP": (pod.get("status") or {}).get("podIP"),
        "status.hostIP": (pod.get("status") or {}).get("hostIP"),
    }
    if path in simple:
        value = simple[path]
        return None if value is None else str(value)
    if match := _FIELD_PATH.match(path):
        value = (metadata.get(match["kind"]) or {}).get(match["key"])
        return None if value is None else str(value)
    return None


def container_environment(
    pod: Mapping[str, Any], container: Mapping[str, Any], directory: Path
) -> dict[str, str]:
    """The process environment: a minimal base, then the container's `env` in order.

    Literal values (with `$(VAR)` expansion against earlier entries) and `fieldRef`s are
    resolved; ConfigMap/Secret references are not (the sandbox kubelet does not read them).
    """
    env: dict[str, str] = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOSTNAME": str((pod.get("metadata") or {}).get("name", "")),
        "HOME": str(directory),
        "TMPDIR": str(directory / ".tmp"),
        "LANG": "C.UTF-8",
    }
    for entry in container.get("env") or []:
        name = entry.get("name")
        if not isinstance(name, str):
            continue
        if "value" in entry:
            env[name] = expand(str(entry.get("value") or ""), env)
        elif field_ref := (entry.get("valueFrom") or {}).get("fieldRef"):
            value = _field_value(pod, str(field_ref.get("fieldPath", "")))
            if value is not None:
                env[name] = value
    return env


def working_directory(container: Mapping[str, Any], directory: Path) -> Path:
    """`workingDir` re-rooted inside the container directory (the container has no own root)."""
    working_dir = container.get("workingDir")
    if not working_dir:
        return directory
    relative = (
        Path(str(working_dir)).relative_to("/")
        if str(working_dir).startswith("/")
        else (Path(str(working_dir)))
    )
    resolved = (directory / relative).resolve()
    if resolved != directory.resolve() and directory.resolve() not in resolved.parents:
        return directory
    return resolved


def container_argv(container: Mapping[str, Any], env: Mapping[str, str]) -> list[str]:
    """command + args with `$(VAR)` expansion; images have no entrypoint here, so args alone run."""
    argv = [str(part) for part in (container.get("command") or [])]
    argv += [str(part) for part in (container.get("args") or [])]
    return [expand(part, env) for part in argv]


@dataclass
class ExecProcess:
    """An exec'd command and the streams the exec channel relays."""

    process: asyncio.subprocess.Process
    stdin: asyncio.StreamWriter | None
    stdout: asyncio.StreamReader | None
    stderr: asyncio.StreamReader | None
    terminal: int | None = None

    def close_stdin(self) -> None:
        if self.stdin is None or self.stdin.is_closing():
            return
        if self.terminal is not None:
            # Closing a terminal's master would hang up the command; EOF is Ctrl-D.
            self.stdin.write(b"\x04")
            return
        self.stdin.close()

    def resize(self, width: int, height: int) -> None:
        if self.terminal is None:
            return
        with contextlib.suppress(OSError):
            fcntl.ioctl(self.terminal, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))

    def release(self) -> None:
        """Close the terminal once the command and its output are done."""
        if self.stdin is not None and not self.stdin.is_closing():
            self.stdin.close()
        if self.terminal is not None:
            with contextlib.suppress(OSError):
                os.close(self.terminal)
            self.terminal = None


def _controlling_terminal() -> None:
    _die_with_parent()
    # The session is new (start_new_session), so stdin, a terminal, can become its controller.
    with contextlib.suppress(OSError):
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)


async def _start_on_terminal(argv: Sequence[str], container: Container) -> ExecProcess:
    master, slave = pty.openpty()
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=container.cwd,
            env={**container.env, "TERM": "xterm"},
            start_new_session=True,
            preexec_fn=_controlling_terminal,
        )
    except BaseException:
        os.close(master)
        raise
    finally:
        os.close(slave)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(os.dup(master), "rb", buffering=0)
    )
    transport, protocol = await loop.connect_write_pipe(
        asyncio.streams.FlowControlMixin, os.fdopen(os.dup(master), "wb", buffering=0)
    )
    writer = asyncio.StreamWriter(transport, protocol, None, loop)
    return ExecProcess(process, writer, reader, None, terminal=master)


@dataclass
class ContainerProcess:
    """The main process of a running container (absent for containers with no command)."""

    process: asyncio.subprocess.Process
    waiter: asyncio.Task[int]


@dataclass
class Container:
    name: str
    directory: Path
    log_path: Path
    env: dict[str, str]
    cwd: Path
    main: ContainerProcess | None = None


@dataclass
class PodProcesses:
    key: tuple[str, str]
    uid: str
    directory: Path
    marker: dict[str, str]
    containers: dict[str, Container] = field(default_factory=dict)
    groups: set[int] = field(default_factory=set)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)


class ContainerRuntime:
    """Owns every process the sandbox starts for pods; `close()` leaves nothing behind."""

    def __init__(self, state_dir: Path) -> None:
        self.root = state_dir / "pods"
        self._trash = state_dir / ".trash"
        self._pods: dict[tuple[str, str], PodProcesses] = {}
        # Tells this runtime's processes apart from another sandbox's on the same host.
        self.instance = uuid.uuid4().hex
        # A request that read the pod just before its deletion must not start anything after it.
        self._removed: set[str] = set()

    def pod_directory(self, namespace: str, pod: str) -> Path:
        return self.root / namespace / pod

    def container(self, namespace: str, pod: str, name: str) -> Container | None:
        record = self._pods.get((namespace, pod))
        return record.containers.get(name) if record else None

    def groups(self, namespace: str, pod: str) -> set[int]:
        record = self._pods.get((namespace, pod))
        return set(record.groups) if record else set()

    def marker(self, uid: str | None = None) -> dict[str, str]:
        """Environment entries every process of the pod (or, without uid, the runtime) has."""
        return reaper.marker(self.instance, uid)

    def _record(self, pod: Mapping[str, Any]) -> PodProcesses:
        metadata = pod.get("metadata") or {}
        key = (str(metadata.get("namespace", "")), str(metadata.get("name", "")))
        uid = str(metadata.get("uid", ""))
        if uid in self._removed:
            raise PodGone(f"pod {key[0]}/{key[1]} ({uid}) was deleted")
        record = self._pods.get(key)
        if record is None or record.uid != uid:
            if record is not None:
                self._removed.add(record.uid)
                self._kill(record)
                reaper.kill_marked(record.marker)
            record = PodProcesses(
                key=key, uid=uid, directory=self.pod_directory(*key), marker=self.marker(uid)
            )
            self._pods[key] = record
        return record

    def _current(self, record: PodProcesses) -> bool:
        return record.uid not in self._removed and self._pods.get(record.key) is record

    async def _adopt(self, record: PodProcesses, process: asyncio.subprocess.Process) -> None:
        """Own a just-started process, or kill it if its pod was removed while it started."""
        if self._current(record):
            record.groups.add(process.pid)
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
        await reaper.reap(record.marker)
        raise PodGone(f"pod of {record.directory} ({record.uid}) was deleted")

    async def start(self, pod: Mapping[str, Any], container_name: str) -> Container:
        """Create the container's directory and run its command, if any, as the main process."""
        record = self._record(pod)
        spec = _container_spec(pod, container_name)
        existing = record.containers.get(container_name)
        if existing is not None and existing.main is not None:
            await self.stop(existing)
        directory = record.directory / container_name
        # The marker comes last so that no `env` entry can hide a process from removal.
        env = {**container_environment(pod, spec, directory), **record.marker}
        cwd = working_directory(spec, directory)
        for path in (directory, Path(env["TMPDIR"]), cwd):
            path.mkdir(parents=True, exist_ok=True)
        container = Container(
            name=container_name,
            directory=directory,
            log_path=record.directory / f"{container_name}.log",
            env=env,
            cwd=cwd,
        )
        if existing is not None and container.log_path.exists():
            # A restart: the new instance logs afresh, the last one stays for `previous=true`.
            container.log_path.replace(previous_log_path(container.log_path))
        container.log_path.touch()
        argv = container_argv(spec, env)
        if argv:
            with container.log_path.open("ab") as log:
                try:
                    process = await asyncio.create_subprocess_exec(
                        *argv,
                        stdin=asyncio.subprocess.DEVNULL,
                        stdout=log,
                        stderr=log,
                        cwd=cwd,
                        env=env,
                        start_new_session=True,
                        preexec_fn=_die_with_parent,
                    )
                except OSError as error:
                    log.write(f"sandbox: cannot start {argv[0]!r}: {error}\n".encode())
                else:
                    await self._adopt(record, process)
                    waiter = asyncio.create_task(process.wait(), name=f"wait-{process.pid}")
                    container.main = ContainerProcess(process, waiter)
        record.containers[container_name] = container
        return container

    async def stop(self, container: Container) -> None:
        """Kill a container's main process group (the profile says it terminated)."""
        if container.main is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(container.main.process.pid, signal.SIGKILL)
        await container.main.waiter
        container.main = None

    async def exec(
        self,
        pod: Mapping[str, Any],
        container_name: str,
        argv: Sequence[str],
        *,
        stdin: bool = True,
        stdout: bool = True,
        stderr: bool = True,
        tty: bool = False,
    ) -> ExecProcess:
        """Run `argv` in the container's directory and environment; unwanted streams go nowhere.

        With `tty` the command gets a pseudo-terminal as stdin/stdout/stderr (one output stream).
        """
        record = self._record(pod)
        container = record.containers.get(container_name)
        if container is None:
            container = await self.start(pod, container_name)
        if tty:
            execution = await _start_on_terminal(argv, container)
        else:
            pipe, devnull = asyncio.subprocess.PIPE, asyncio.subprocess.DEVNULL
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=pipe if stdin else devnull,
                stdout=pipe if stdout else devnull,
                stderr=pipe if stderr else devnull,
                cwd=container.cwd,
                env=container.env,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
            execution = ExecProcess(process, process.stdin, process.stdout, process.stderr)
        try:
            await self._adopt(record, execution.process)
        except PodGone:
            execution.release()
            raise
        return execution

    def track(self, pod: Mapping[str, Any], task: asyncio.Task[Any]) -> None:
        """Keep a background task (e.g. draining a detached exec) until the pod goes."""
        record = self._record(pod)
        record.tasks.add(task)
        task.add_done_callback(record.tasks.discard)

    def _kill(self, record: PodProcesses) -> None:
        for group in record.groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)
        for task in record.tasks:
            task.cancel()

    async def remove_pod(self, namespace: str, pod: str, uid: str | None = None) -> None:
        """Kill every process of the pod, detached ones included, and remove its directory."""
        if uid is not None:
            self._removed.add(uid)
        record = self._pods.get((namespace, pod))
        if record is None or (uid is not None and record.uid != uid):
            if uid is not None:
                # A start that lost the race with an earlier removal may have left something.
                await reaper.reap(self.marker(uid))
            return
        self._removed.add(record.uid)
        del self._pods[(namespace, pod)]
        self._kill(record)
        waiters = [c.main.waiter for c in record.containers.values() if c.main is not None]
        await asyncio.gather(*waiters, *record.tasks, return_exceptions=True)
        await reaper.reap(record.marker)
        if record.directory.exists():
            # Rename first so a pod re-created with the same name gets a fresh directory at once.
            self._trash.mkdir(parents=True, exist_ok=True)
            target = self._trash / uuid.uuid4().hex
            record.directory.rename(target)
            await asyncio.to_thread(shutil.rmtree, target, True)

    async def close(self) -> None:
        """Remove every pod, then kill whatever else still carries this runtime's marker."""
        for namespace, pod in list(self._pods):
            await self.remove_pod(namespace, pod)
        await reaper.reap(self.marker())


def previous_log_path(log_path: Path) -> Path:
    """`<container>.previous.log`: no container's own log, as names cannot contain dots."""
    return log_path.with_suffix(".previous.log")


def _container_spec(pod: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    for container in (pod.get("spec") or {}).get("containers") or []:
        if container.get("name") == name:
            return dict(container)
    return {"name": name}
