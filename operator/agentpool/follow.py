"""A step's output, read or followed from the file its keeper writes in the agent container.

The container keeps everything a step prints in `<state>/<uid>.<attempt>/out` and writes `rc`
when the step ends (docs/sessions.md). Following is one exec per attempt running the constant
`FOLLOW_SCRIPT`: its arguments are the step's directory id, the state directory, the offset to
start from and the mode, never a script. It copies the file from the offset as it grows and
ends once `rc` is there (`once`: at the end of what is there now). If the exec drops, the
next one starts at the offset already received, so nothing is printed twice.

Until a step starts, its BuildStep is polled; once it is final, the status line says how it
ended. When the agent is gone, what `status.logTail` still holds is printed instead, and a
note on stderr says so.

The whole output of a finished step is read with `steps.logs.read_step_log`; the directory id
comes from `steps.logs.step_dir_id`. `FOLLOW_SCRIPT` resolves the state directory the way
`steps.logs` and the session driver do (the container's `AGENTPOOL_STATE_DIR`, then the
operator's setting, then `${TMPDIR:-/tmp}/.agentpool`); it lives here because `steps/` is not
the command line's.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
from kubernetes_asyncio.client.exceptions import ApiException

from agentpool.builds import StepView, in_order, last_lines, waiting_for
from agentpool.kube import client as kube
from agentpool.kube.exec import ExecConnectError, ExecError, open_exec
from agentpool.model import AgentPoolSpec, BuildStepSpec, SpecError
from agentpool.steps.logs import LogUnavailable, read_step_log, step_dir_id
from agentpool.steps.protocol import shell_program

__all__ = [
    "FOLLOW_SCRIPT",
    "FollowError",
    "StepFollower",
    "StepNotFound",
    "follow_command",
    "lost_output",
]

# The script `agentpool logs` runs in the agent container: follow.sh (its arguments there).
FOLLOW_SCRIPT: Final = shell_program("agentpool", "follow.sh")
MISSING_EXIT: Final = 3
POLL_SECONDS: Final = 0.5
# A final step's output is copied within this long once its status says so (the script
# polls every 0.2 s); longer means it is not on that agent (removed, or another state dir).
FINAL_GRACE_SECONDS: Final = 3.0
HINT_SECONDS: Final = 2.0
RETRY_CAP_SECONDS: Final = 5.0


def follow_command(step_id: str, offset: int, state_dir: str | None, *, once: bool) -> list[str]:
    return [
        "/bin/sh",
        "-c",
        FOLLOW_SCRIPT,
        step_id,
        state_dir or "",
        str(offset),
        "once" if once else "follow",
    ]


class StepNotFound(Exception):
    """The BuildStep does not exist (or was deleted while followed)."""


class FollowError(Exception):
    """The output cannot be read for a reason the user must fix; one line says which."""


class _Copy(enum.Enum):
    COMPLETE = "complete"  # up to the end (follow: the step ended)
    MISSING = "missing"  # no directory for the step on the agent
    GONE = "gone"  # the agent pod does not exist
    DROPPED = "dropped"  # the exec failed or ended early: try again from the offset
    STALE = "stale"  # the step moved to a new attempt or agent
    ENDED = "ended"  # the step is final and its output never appeared on the agent


@dataclass(frozen=True)
class _Copied:
    kind: _Copy
    size: int
    detail: str = ""


def lost_output(
    step: StepView, body: dict[str, Any], received: int, *, gone: bool
) -> tuple[bytes, str]:
    """What status.logTail adds to the `received` bytes already shown, and a note saying so.

    status.logBytes (all the step printed) and the tail's size tell which part of the tail
    follows what was shown; without them the whole tail is shown.
    """
    tail = step.log_tail.encode()
    status = body.get("status") or {}
    total = status.get("logBytes")
    agent = f"agent {step.agent}" if step.agent else "its agent"
    if gone:
        where = f"{agent} is gone"
    else:
        # Removed after the step finished, or kept under another state directory.
        where = (
            f"the output is no longer on {agent} (removed once its build moved on, or kept "
            "under another --agent-state-dir)"
        )
    if not isinstance(total, int) or total < len(tail):
        total = received + len(tail)
    start = total - len(tail)  # offset of the tail's first byte in the whole output
    if received >= total:
        return b"", ""
    if start == 0 and received == 0:
        shown = tail
        note = f"{where}: printed the whole output, which status.logTail holds"
    elif received >= start:
        shown = tail[received - start :]
        note = f"{where}: printed the rest of the output from status.logTail"
    else:
        shown = tail
        note = (
            f"{where}: printed the last {len(tail)} of {total} bytes of output, which "
            "status.logTail keeps"
        )
        if received:
            note += f" (bytes {received} to {start} are lost)"
    return shown, note


class StepFollower:
    """Reads and follows BuildSteps of one namespace; output to `write`, notes to `note`."""

    def __init__(
        self,
        clients: kube.KubeClients,
        namespace: str,
        write: Callable[[bytes], object],
        note: Callable[[str], object],
        *,
        state_dir: str | None = None,
        poll: float = POLL_SECONDS,
    ) -> None:
        self.clients = clients
        self.namespace = namespace
        self.write = write
        self.note = note
        self.state_dir = state_dir
        self.poll = poll
        self._containers: dict[str, str] = {}
        self._hints: dict[str, tuple[float, str | None]] = {}  # build -> (when, agent)

    async def body(self, name: str) -> dict[str, Any]:
        try:
            return await kube.get_object(self.clients.api, kube.BUILDSTEPS, self.namespace, name)
        except ApiException as error:
            if error.status == 404:
                raise StepNotFound(f"BuildStep {self.namespace}/{name} not found") from None
            raise FollowError(api_failure(error)) from None

    async def view(self, name: str) -> tuple[StepView, dict[str, Any]]:
        body = await self.body(name)
        return StepView.from_body(body), body

    # --- the whole output ------------------------------------------------------------------

    async def print_log(self, name: str, *, tail: int | None = None) -> StepView:
        """Print what the step printed so far; raise FollowError when it has not started."""
        step, body = await self.view(name)
        if not step.has_started:
            if step.is_final:
                return step
            raise FollowError(
                f"step {name} has not started yet ({step.shown_phase}): "
                "use -f to wait for it and follow its output"
            )
        chunks: list[bytes] = []
        sink: Callable[[bytes], object] = chunks.append if tail is not None else self.write
        received = 0

        def count(data: bytes) -> None:
            nonlocal received
            received += len(data)
            sink(data)

        try:
            await read_step_log(
                self.clients.api,
                self.clients.exec,
                self.namespace,
                name,
                count,
                state_dir=self.state_dir,
            )
        except ExecConnectError as error:
            if error.status in (401, 403):
                raise FollowError(exec_failure(step, error)) from None
            self._lost(step, body, received, chunks, tail, gone=error.status == 404)
            return step
        except LogUnavailable:
            self._lost(step, body, received, chunks, tail, gone=False)
            return step
        except ApiException as error:
            if error.status != 404:
                raise FollowError(api_failure(error)) from None
            # The step's pool is gone, and its agents with it.
            self._lost(step, body, received, chunks, tail, gone=True)
            return step
        except ExecError as error:
            raise FollowError(f"reading the output of step {name} failed: {error}") from None
        if tail is not None:
            self.write(last_lines(b"".join(chunks), tail))
        return step

    def _lost(
        self,
        step: StepView,
        body: dict[str, Any],
        received: int,
        chunks: list[bytes],
        tail: int | None,
        *,
        gone: bool,
    ) -> None:
        shown, note = lost_output(step, body, received, gone=gone)
        if tail is not None:
            shown = last_lines(b"".join(chunks) + shown, tail)
        self.write(shown)
        if note:
            self.note(note)

    # --- following -------------------------------------------------------------------------

    async def follow(
        self,
        name: str,
        *,
        tail: int | None = None,
        on_wait: Callable[[StepView], object] | None = None,
        agent_hint: Callable[[StepView], Awaitable[str | None]] | None = None,
    ) -> StepView:
        """Print the step's output as it is printed, until the step is final; return it.

        The exec opens as soon as the step's agent is known (its status.agent, else
        `agent_hint(step)`; by default the agent of the build's latest placed step) and
        waits there for the output to appear,
        so that a quick step's output is caught before the operator removes its files. Until
        then, `on_wait` gets the step each time its phase or reason changes (by default, a
        note).
        """
        offset = 0
        attempt: str | None = None
        waiting: tuple[str | None, str | None] | None = None
        pending_tail = tail
        failures = 0
        while True:
            step, body = await self.view(name)
            if step.is_final and not step.has_started:
                return step
            agent = step.agent
            if agent is None and not step.is_final:
                agent = await (agent_hint or self.build_agent)(step)
            if agent is None or (pending_tail is not None and not step.has_started):
                if (step.phase, step.reason) != waiting:
                    waiting = (step.phase, step.reason)
                    (on_wait or self._note_wait)(step)
                await asyncio.sleep(self.poll)
                continue
            # A new attempt writes a new directory; the same one on another agent (the
            # operator moved the build) continues at the offset already shown.
            current = step_dir_id(body)
            if current != attempt:
                if attempt is not None:
                    self.note(
                        f"step {name} started again: attempt {step.attempts} on agent {agent}"
                    )
                    offset = 0
                attempt = current
            if pending_tail is not None:
                chunks: list[bytes] = []
                copied = await self._copy(step, body, agent, offset, once=True, write=chunks.append)
                if copied.kind is _Copy.COMPLETE:
                    self.write(last_lines(b"".join(chunks), pending_tail))
                    offset += copied.size
                    pending_tail = None
                    continue
            else:
                copied = await self._copy_watched(
                    step, body, agent, offset, once=step.is_final, write=self.write
                )
                offset += copied.size
            if copied.kind is _Copy.COMPLETE:
                if step.is_final:
                    return step
                return await self._until_final(name)
            if copied.kind is _Copy.STALE:
                continue  # the step moved on (new attempt or agent): look again at once
            if step.is_final or copied.kind is _Copy.ENDED:
                # Nothing more will be written: what is left is in the status, if anywhere.
                step, body = await self.view(name)
                self._lost(step, body, offset, [], pending_tail, gone=copied.kind is _Copy.GONE)
                return step
            failures += 1
            await asyncio.sleep(min(self.poll * failures, RETRY_CAP_SECONDS))

    async def _copy_watched(
        self,
        step: StepView,
        body: dict[str, Any],
        agent: str,
        offset: int,
        *,
        once: bool,
        write: Callable[[bytes], object],
    ) -> _Copied:
        """`_copy`, while the step's status is watched: a new attempt or agent stops it
        (STALE), and so does a final step whose output never shows up there (ENDED)."""
        shown = 0

        def counted(data: bytes) -> None:
            nonlocal shown
            shown += len(data)
            write(data)

        loop = asyncio.get_running_loop()
        copy = asyncio.create_task(self._copy(step, body, agent, offset, once=once, write=counted))
        final_since: float | None = None
        try:
            while True:
                done, _ = await asyncio.wait({copy}, timeout=self.poll)
                if done:
                    return copy.result()
                now, now_body = await self.view(step.name)
                if step_dir_id(now_body) != step_dir_id(body) or (
                    now.agent is not None and now.agent != agent
                ):
                    return _Copied(_Copy.STALE, shown)
                if now.is_final:
                    final_since = final_since if final_since is not None else loop.time()
                    if loop.time() - final_since > FINAL_GRACE_SECONDS:
                        return _Copied(_Copy.ENDED, shown)
        finally:
            if not copy.done():
                copy.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await copy

    async def build_agent(self, step: StepView) -> str | None:
        """Where the step's build runs: the agent of its latest step that has one (a build's
        later steps show their agent only once running, and a quick one may be over by
        then). Listing a namespace is not cheap: at most one list per HINT_SECONDS."""
        if step.build == step.name:
            return None  # a build of its own: its status names its agent before it starts
        loop = asyncio.get_running_loop()
        cached = self._hints.get(step.build)
        if cached is not None and loop.time() - cached[0] < HINT_SECONDS:
            return cached[1]
        try:
            bodies = await kube.list_objects(self.clients.api, kube.BUILDSTEPS, self.namespace)
        except ApiException as error:
            raise FollowError(api_failure(error)) from None
        views = [StepView.from_body(b) for b in bodies]
        placed = [v for v in in_order(views) if v.build == step.build and v.agent]
        agent = placed[-1].agent if placed else None
        self._hints[step.build] = (loop.time(), agent)
        return agent

    async def _until_final(self, name: str) -> StepView:
        # The script ended; the operator writes the final phase right after it sees `rc`.
        while True:
            step, _ = await self.view(name)
            if step.is_final:
                return step
            await asyncio.sleep(self.poll)

    def _note_wait(self, step: StepView) -> None:
        self.note(f"step {step.name} is waiting: {waiting_for(step)}")

    async def _container(self, step: StepView, body: dict[str, Any]) -> str | None:
        """The container the step runs in; None when its pool (and so its agents) is gone."""
        known = self._containers.get(step.name)
        if known is not None:
            return known
        try:
            spec = BuildStepSpec.from_body(body.get("spec") or {}, name=step.name)
            container = spec.container
            if container is None:
                pool = await kube.get_object(
                    self.clients.api, kube.AGENTPOOLS, self.namespace, spec.pool
                )
                container = AgentPoolSpec.from_body(pool.get("spec") or {}).agent_container
        except SpecError as error:
            raise FollowError(f"step {step.name}: {error}") from None
        except ApiException as error:
            if error.status == 404:
                return None
            raise FollowError(api_failure(error)) from None
        self._containers[step.name] = container
        return container

    async def _copy(
        self,
        step: StepView,
        body: dict[str, Any],
        agent: str,
        offset: int,
        *,
        once: bool,
        write: Callable[[bytes], object],
    ) -> _Copied:
        container = await self._container(step, body)
        if container is None:
            return _Copied(_Copy.GONE, 0, f"pool {step.pool} is gone")
        command = follow_command(step_dir_id(body), offset, self.state_dir, once=once)
        try:
            session = await open_exec(
                self.clients.exec, self.namespace, agent, container, command, stdin=False
            )
        except ExecConnectError as error:
            if error.status == 404:
                return _Copied(_Copy.GONE, 0, str(error))
            if error.status in (401, 403):
                raise FollowError(exec_failure(step, error)) from None
            return _Copied(_Copy.DROPPED, 0, str(error))
        size = 0
        try:
            async with session:
                while (item := await session.read()) is not None:
                    channel, data = item
                    if channel == 1:
                        size += len(data)
                        write(data)
                result = await session.result()
        except ExecError as error:
            return _Copied(_Copy.DROPPED, size, str(error))
        if result.exit_code == 0:
            return _Copied(_Copy.COMPLETE, size)
        if result.exit_code == MISSING_EXIT:
            return _Copied(_Copy.MISSING, size)
        return _Copied(_Copy.DROPPED, size, f"exit code {result.exit_code}")


def api_failure(error: ApiException) -> str:
    return f"the API server answered {error.status} {error.reason}".rstrip()


def exec_failure(step: StepView, error: ExecConnectError) -> str:
    return (
        f"cannot exec into agent {step.agent} to read step {step.name}: "
        f"{error.status} {error.body_message or error.reason}"
    ).rstrip()


def unreachable(error: aiohttp.ClientError | OSError) -> str:
    return f"cannot reach the API server: {error}"
