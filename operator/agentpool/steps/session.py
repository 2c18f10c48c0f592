"""One session: many steps over one exec stream into one container (protocol in `protocol`).

The session writes the driver, then step messages, to the exec's stdin and demultiplexes the
driver's frames into per-step handles. Only a bounded tail of each step's output is kept in
memory; whole output goes to the caller's `on_output` callback as it arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from agentpool.steps import protocol
from agentpool.steps.protocol import (
    CancelAck,
    DriverError,
    Finished,
    FrameParser,
    Goodbye,
    Hello,
    Output,
    ProtocolError,
    Started,
    StepRequest,
    Unknown,
)

DEFAULT_TAIL_BYTES = 64 * 1024
STDOUT = 1
STDERR = 2


class ExecStream(Protocol):
    """The part of `agentpool.kube.exec.ExecSession` a session needs."""

    async def write(self, data: bytes) -> None: ...
    async def close_stdin(self) -> None: ...
    async def read(self) -> tuple[int, bytes] | None: ...
    async def close(self) -> None: ...


class SessionLost(Exception):
    """The stream ended before the step finished: resume it in a new session."""


class StepNotStarted(Exception):
    """The container has no record of the step (a resume of a step never started)."""


class StepRejected(Exception):
    """The driver refused the step message (e.g. an invalid id)."""


@dataclass(frozen=True)
class StepResult:
    exit_code: int  # -1 when the step's keeper vanished without a result
    reason: str  # exit | timeout | cancelled | lost | shell | workdir
    total_bytes: int


OutputCallback = Callable[[int, bytes], None]


class StepHandle:
    """A step as seen through one session."""

    def __init__(self, step_id: str, offset: int, tail_bytes: int) -> None:
        self.step_id = step_id
        self.pid: int | None = None
        self.offset = offset  # next byte expected
        self.on_output: OutputCallback | None = None
        self.on_started: Callable[[int], None] | None = None
        self.started = asyncio.Event()
        self._tail = bytearray()
        self._tail_bytes = tail_bytes
        self._result: asyncio.Future[StepResult] = asyncio.get_running_loop().create_future()

    @property
    def tail(self) -> bytes:
        return bytes(self._tail)

    def done(self) -> bool:
        return self._result.done()

    async def wait(self) -> StepResult:
        return await asyncio.shield(self._result)

    def _output(self, offset: int, data: bytes) -> None:
        # The driver sends ranges in order from the offset asked for; anything else is a bug.
        if offset != self.offset:
            raise ProtocolError(f"{self.step_id}: output at {offset}, expected {self.offset}")
        self.offset += len(data)
        if self._tail_bytes:
            self._tail += data[-self._tail_bytes :]
            del self._tail[: max(0, len(self._tail) - self._tail_bytes)]
        if self.on_output is not None:
            self.on_output(offset, data)

    def _start(self, pid: int) -> None:
        self.pid = pid
        self.started.set()
        if self.on_started is not None:
            self.on_started(pid)

    def _finish(self, result: StepResult | BaseException) -> None:
        if self._result.done():
            return
        if isinstance(result, BaseException):
            self._result.set_exception(result)
            # Callers that never wait must not get "exception never retrieved" noise.
            self._result.exception()
        else:
            self._result.set_result(result)


class Session:
    """A running driver on one exec stream. Create with `await Session.start(stream)`."""

    def __init__(self, stream: ExecStream, nonce: str, tail_bytes: int) -> None:
        self._stream = stream
        self._nonce = nonce
        self._parser = FrameParser(nonce)
        self._tail_bytes = tail_bytes
        self._handles: dict[str, StepHandle] = {}
        self._write_lock = asyncio.Lock()
        self._hello: asyncio.Future[Hello] = asyncio.get_running_loop().create_future()
        self._ended = asyncio.Event()
        self._goodbye = False
        self._closing = False
        self._reader: asyncio.Task[None] | None = None
        self.error: BaseException | None = None
        self.driver_stderr = bytearray()  # bounded tail, for diagnostics
        self.steps_submitted = 0
        self.idle_since: float | None = time.monotonic()

    @classmethod
    async def start(
        cls,
        stream: ExecStream,
        nonce: str | None = None,
        *,
        tail_bytes: int = DEFAULT_TAIL_BYTES,
        ready_timeout: float | None = 30.0,
        state_dir: str | None = None,
    ) -> Session:
        """Send the driver and wait until it answers."""
        greeting = protocol.build_hello(nonce := nonce or secrets.token_hex(16), state_dir)
        session = cls(stream, nonce, tail_bytes)
        session._reader = asyncio.create_task(session._read_loop())
        await session._send(greeting)
        try:
            hello = await asyncio.wait_for(asyncio.shield(session._hello), ready_timeout)
        except BaseException:
            await session.abort()
            raise
        session.mode = hello.mode
        return session

    mode: str = ""

    @property
    def nonce(self) -> str:
        return self._nonce

    @property
    def active(self) -> int:
        return sum(1 for h in self._handles.values() if not h.done())

    @property
    def open(self) -> bool:
        return not self._ended.is_set() and not self._closing

    async def submit(self, request: StepRequest, *, offset: int = 0) -> StepHandle:
        """Run a step (idempotent: a step started before is only watched from `offset`)."""
        message = protocol.build_run(request, offset)
        current = self._handles.get(request.step_id)
        if current is not None and not current.done():
            return current
        handle = self._watch(request.step_id, offset)
        self.steps_submitted += 1
        await self._send(message)
        return handle

    async def resume(self, step_id: str, offset: int = 0) -> StepHandle:
        """Follow a step started earlier; `wait()` raises StepNotStarted if it never was."""
        message = protocol.build_resume(step_id, offset)
        handle = self._watch(step_id, offset)
        await self._send(message)
        return handle

    async def cancel(self, step_id: str) -> None:
        """Ask the step's keeper to kill its process group; its handle finishes `cancelled`."""
        await self._send(protocol.build_cancel(step_id))

    async def forget(self, step_id: str) -> None:
        """Delete a finished step's files in the container once its result is recorded."""
        await self._send(protocol.build_forget(step_id))

    async def clean_workspaces(self, agent: str, keep: str | None = None) -> None:
        """Remove the build workspaces of `agent` in the container, all but `keep`'s."""
        await self._send(protocol.build_clean(agent, keep))

    async def close(self) -> None:
        """Let watched steps finish, then end the driver (it exits 0). Bound it with
        `asyncio.timeout`: on cancellation the stream is dropped, steps keep running."""
        if not self._ended.is_set() and not self._closing:
            self._closing = True
            with contextlib.suppress(Exception):
                await self._send(protocol.BYE)
                await self._stream.close_stdin()
        try:
            await self._ended.wait()
        finally:
            await self.abort()

    async def abort(self) -> None:
        """Drop the stream now; steps keep running in the container."""
        self._closing = True
        with contextlib.suppress(Exception):
            await self._stream.close()
        if self._reader is not None and not self._reader.done():
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        self._end(SessionLost("session aborted"))

    async def wait_closed(self) -> None:
        await self._ended.wait()

    def _watch(self, step_id: str, offset: int) -> StepHandle:
        if not self.open:
            raise SessionLost("session is not open")
        current = self._handles.get(step_id)
        if current is not None and not current.done():
            return current
        handle = StepHandle(step_id, offset, self._tail_bytes)
        self._handles[step_id] = handle
        self.idle_since = None
        return handle

    async def _send(self, data: bytes) -> None:
        async with self._write_lock:
            try:
                await self._stream.write(data)
            except Exception as exc:
                self._end(SessionLost(f"write failed: {exc}"))
                raise SessionLost(str(exc)) from exc

    async def _read_loop(self) -> None:
        error: BaseException = SessionLost("exec stream ended")
        try:
            while True:
                item = await self._stream.read()
                if item is None:
                    break
                channel, data = item
                if channel == STDOUT:
                    for event in self._parser.feed(data):
                        self._dispatch(event)
                elif channel == STDERR:
                    self.driver_stderr += data
                    del self.driver_stderr[: max(0, len(self.driver_stderr) - 4096)]
        except ProtocolError as exc:
            error = SessionLost(f"protocol error: {exc}")
            self.error = exc
        except Exception as exc:
            error = SessionLost(f"exec stream failed: {exc}")
            self.error = exc
        self._end(error)

    def _dispatch(self, event: protocol.Event) -> None:
        if isinstance(event, Hello):
            if not self._hello.done():
                self._hello.set_result(event)
            return
        if isinstance(event, Goodbye):
            self._goodbye = True
            return
        if isinstance(event, DriverError) and event.step_id == "-":
            self.error = StepRejected(event.code)
            return
        if isinstance(event, CancelAck):
            return
        handle = self._handles.get(event.step_id)
        if handle is None:
            raise ProtocolError(f"frame for a step not watched: {event.step_id}")
        if isinstance(event, Output):
            handle._output(event.offset, event.data)
        elif isinstance(event, Started):
            handle._start(event.pid)
        elif isinstance(event, Finished):
            handle._finish(StepResult(event.exit_code, event.reason, event.total_bytes))
            self._settle()
        elif isinstance(event, Unknown):
            handle._finish(StepNotStarted(event.step_id))
            self._settle()
        elif isinstance(event, DriverError):
            handle._finish(StepRejected(event.code))
            self._settle()

    def _settle(self) -> None:
        if self.active == 0 and self.idle_since is None:
            self.idle_since = time.monotonic()

    def _end(self, error: BaseException) -> None:
        if not self._hello.done():
            self._hello.set_exception(error)
            self._hello.exception()
        for handle in self._handles.values():
            handle._finish(error)
        self._settle()
        self._ended.set()
