"""The build runner: one task per build that holds its agent and exec sessions and runs its steps.

Steps of a build run one after another on one leased agent. With batching, one exec session per
container of that agent carries every step of the build; it holds one slot of the pool's quota
while open, closes after `sessions.linger` without work, and gives its slot up early when someone
waits for the quota: between steps by closing, during a long step by dropping the stream and
polling the step later with a short session that resumes it by offset. Nothing runs twice: a
step's start is idempotent in the container (the session protocol's `started` marker), so
resubmitting a step that may have started only watches it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from agentpool.kube.exec import ExecApiClient, ExecConnectError, ExecError, open_exec
from agentpool.kube.quota import ApiQuota, Connection, QuotaTimeout
from agentpool.metrics import Catalogue
from agentpool.model import AgentPoolSpec, StepPhase
from agentpool.steps.batching import BOOTSTRAP_COMMAND
from agentpool.steps.runs import StepRun, now, rfc3339
from agentpool.steps.scheduling import Action, BuildQueue, Failure, should_retry
from agentpool.steps.session import Session, SessionLost, StepNotStarted, StepRejected, StepResult

__all__ = ["AgentSource", "BuildRunner", "Lease", "Outcome", "RunnerContext"]

log = logging.getLogger(__name__)

# A session that cannot be (re)opened this many times in a row has lost its step.
MAX_SESSION_FAILURES = 5
SESSION_READY_TIMEOUT = 30.0
CLOSE_TIMEOUT = 5.0
# Once resumed, a session keeps its slot this long before it may yield again, so that a
# contended quota does not turn polling into a connection storm.
MIN_HOLD = 0.2
# Status writes that a later one usually supersedes wait this long before they cost a request.
QUEUED_DELAY = 0.5
# How often an idle build looks for builds waiting for an agent of its pool.
HAND_OVER_POLL = 0.05
RUNNING_DELAY = 0.1
# The batch window is slept in this many ticks, and lasts at most GATHER_CAP windows.
GATHER_TICKS = 5
GATHER_CAP = 4


class Lease(Protocol):
    """The part of the pool layer's AgentLease a build needs."""

    namespace: str
    pod_name: str
    lost: asyncio.Event
    lost_reason: str


class AgentSource(Protocol):
    """Pools and their agents, as the pool layer offers them."""

    def pool_spec(self, pool: str) -> AgentPoolSpec | None: ...
    def quota(self, pool: str) -> ApiQuota | None: ...
    async def acquire(self, pool: str, build: str, *, timeout: float | None) -> Lease: ...  # noqa: ASYNC109
    async def release(self, lease: Lease, *, delete: bool) -> None: ...
    def notify(self, pool: str) -> None:
        """The pool's queued/running step counts changed."""

    def waiting_builds(self, pool: str) -> int:
        """How many builds wait for an agent of `pool`."""


@dataclass(frozen=True)
class Outcome:
    """A step's final phase and what its status says about it."""

    phase: StepPhase
    reason: str
    message: str
    exit_code: int | None = None


class InfrastructureFailure(Exception):
    def __init__(self, failure: Failure, message: str) -> None:
        super().__init__(message)
        self.failure = failure


@dataclass
class RunnerContext:
    """What every build runner shares: clients, settings, the writer and the metrics."""

    exec_api: ExecApiClient | None
    agents: AgentSource
    write: Callable[[StepRun, dict[str, Any], float], None]  # (run, status fields, delay)
    finished: Callable[[StepRun, Outcome], None]
    metrics: Catalogue
    batching: bool = True
    build_grace: float = 1.0
    tail_bytes: int = 4096
    # The agent containers' state dir (their own AGENTPOOL_STATE_DIR wins); None: the default.
    state_dir: str | None = None
    event: Callable[[StepRun, str, str], None] = lambda run, reason, message: None
    pools_changed: asyncio.Event = field(default_factory=asyncio.Event)
    # Tests replace how an exec stream is opened (e.g. to count or fail connections).
    open_stream: Callable[[str, str, str], Awaitable[Any]] | None = None


class _OpenSession:
    """An exec session into one container, with the quota slot it holds."""

    def __init__(self, session: Session, slot: Connection, quota: ApiQuota, pool: str) -> None:
        self.session = session
        self.slot = slot
        self.quota = quota
        self.pool = pool
        self.steps = 0
        self.opened_at = asyncio.get_running_loop().time()


class BuildRunner:
    """Runs the queued steps of one build; see the module docstring."""

    def __init__(self, ctx: RunnerContext, queue: BuildQueue, pool: str) -> None:
        self.ctx = ctx
        self.queue = queue
        self.pool = pool
        self.steps: dict[str, StepRun] = {}
        self.running: StepRun | None = None
        self.wake = asyncio.Event()
        self.lease: Lease | None = None
        self._sessions: dict[tuple[str, str], _OpenSession] = {}
        self._pending_pool: set[str] = set()
        # The first step on a new lease waits for its batch window; later ones never do.
        self._gathered = False
        self._arrivals = 0  # steps added so far: the batch window restarts on each

    # --- queue ------------------------------------------------------------------------

    def add(self, run: StepRun) -> None:
        self.steps[run.name] = run
        self._arrivals += 1
        self.queue.add(run.queued)
        self.wake.set()

    def cancel(self, name: str) -> bool:
        """The BuildStep was deleted: kill it if running (its attempt then ends `Cancelled`);
        True when it was only queued and is now dropped (the caller finishes it)."""
        run = self.steps.get(name)
        if run is None:
            return False
        run.deleted.set()
        self.wake.set()
        if self.running is run:
            return False
        self.queue.remove(name)
        del self.steps[name]
        return True

    @property
    def queued_count(self) -> int:
        return len(self.queue) - (1 if self.running is not None else 0)

    # --- main loop ----------------------------------------------------------------------

    async def run(self, done: Callable[[BuildRunner], bool]) -> None:
        """Run until the build has had nothing to do for its grace; `done` removes it (and
        says False if work arrived meanwhile)."""
        tried_lease = False
        try:
            while True:
                decision = self.queue.next()
                if decision is None:
                    await self._idle()
                    if self.queue.next() is None and done(self):
                        return
                    continue
                run = self.steps[decision.step.name]
                if decision.action is Action.SKIP:
                    self._finish(run, Outcome(StepPhase.SKIPPED, decision.reason, decision.message))
                    continue
                spec = self.ctx.agents.pool_spec(self.pool)
                if spec is None:
                    await self._wait_for_pool()
                    continue
                container = run.spec.container or spec.agent_container
                if container not in spec.container_names:
                    self._reject(
                        run,
                        "ContainerNotFound",
                        f"container {container!r} is not in pool {self.pool} (its containers: "
                        f"{', '.join(spec.container_names)}); set spec.container to one of them",
                    )
                    continue
                if not run.submitted and run.recovered_agent is None:
                    # Steps of the build keep arriving while it waits for an agent or gathers
                    # a batch (the initial listing even comes sorted by name): decide again.
                    if self.lease is None and not tried_lease:
                        tried_lease = True
                        with contextlib.suppress(InfrastructureFailure):
                            await self._ensure_lease()  # the attempt reports a failure
                        continue
                    if not self._gathered:
                        self._gathered = True
                        if await self._gather(spec):
                            continue
                tried_lease = False
                self.running = run
                try:
                    outcome = await self._run_step(run, container, spec)
                finally:
                    self.running = None
                self._finish(run, outcome)
        except asyncio.CancelledError:
            await self.close()  # operator shutdown: steps go on in their containers
            raise
        except BaseException:
            await self._close_sessions()
            await self._release_lease()
            raise

    def _finish(self, run: StepRun, outcome: Outcome) -> None:
        self.queue.record(run.name, outcome.phase)
        self.steps.pop(run.name, None)
        self.ctx.finished(run, outcome)

    def _reject(self, run: StepRun, reason: str, message: str) -> None:
        # The engine records the Warning Event of every non-script failure.
        self._finish(run, Outcome(StepPhase.FAILED, reason, message))

    async def _wait_for_pool(self) -> None:
        message = f"AgentPool {self.pool} does not exist (yet); the step waits for it"
        for run in self.steps.values():
            if run.name not in self._pending_pool:
                self._pending_pool.add(run.name)
                self.ctx.write(
                    run,
                    {
                        "phase": StepPhase.PENDING.value,
                        "reason": "PoolNotFound",
                        "message": message,
                    },
                    0.0,
                )
        self.ctx.pools_changed.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await self.ctx.pools_changed.wait()

    async def _idle(self) -> None:
        """Nothing queued: keep sessions for `linger` (less if others wait for the quota), and
        the agent for the build's grace, unless work arrives."""
        loop = asyncio.get_running_loop()
        spec = self.ctx.agents.pool_spec(self.pool)
        linger = spec.sessions.linger if spec is not None else 0.0
        start = loop.time()
        self.wake.clear()
        # Other builds waiting for an agent of the pool get this one at once, not after
        # linger + grace.
        if self._sessions:
            if await self._wait_work(linger, yield_quota=True, hand_over=True):
                return
            await self._close_sessions()
        if self.lease is not None:
            grace = max(0.0, self.ctx.build_grace - (loop.time() - start))
            if await self._wait_work(grace, yield_quota=False, hand_over=True):
                return
            await self._release_lease()

    async def _wait_work(self, seconds: float, *, yield_quota: bool, hand_over: bool) -> bool:
        """True when work arrived within `seconds`; False on timeout, quota waiters or (with
        `hand_over`) builds waiting for an agent."""
        if hand_over and self.ctx.agents.waiting_builds(self.pool) > 0:
            return self.wake.is_set()
        waits: list[Coroutine[Any, Any, Any]] = [self.wake.wait()]
        if yield_quota:
            waits += [s.quota.wait_for_waiters() for s in self._sessions.values()]
        if hand_over:
            waits.append(self._builds_waiting())
        first = await _first(waits, within=seconds)
        return first == 0

    async def _builds_waiting(self) -> None:
        # The pool layer offers a count, not an event: look often enough to hand over quickly.
        while self.ctx.agents.waiting_builds(self.pool) == 0:  # noqa: ASYNC110
            await asyncio.sleep(HAND_OVER_POLL)

    # --- one step ---------------------------------------------------------------------

    async def _run_step(self, run: StepRun, container: str, spec: AgentPoolSpec) -> Outcome:
        while True:
            if run.deleted.is_set() and not run.submitted:
                return Outcome(StepPhase.CANCELLED, "Deleted", "the BuildStep was deleted")
            if run.attempts == 0:
                run.attempts = 1
            try:
                result = await self._attempt(run, container, spec)
            except InfrastructureFailure as failure:
                if should_retry(failure.failure, run.attempts, run.spec.retries):
                    log.warning(
                        "step %s/%s attempt %d: %s; retrying",
                        run.namespace,
                        run.name,
                        run.attempts,
                        failure,
                    )
                    self.ctx.event(run, f"Retry{failure.failure.value}", str(failure))
                    self._next_attempt(run)
                    continue
                return Outcome(StepPhase.FAILED, failure.failure.value, str(failure))
            outcome = _classify(result, run)
            if outcome is None:  # the keeper vanished: nothing recoverable
                message = "the step's process vanished without an exit status"
                if should_retry(Failure.SESSION_LOST, run.attempts, run.spec.retries):
                    self._next_attempt(run)
                    continue
                return Outcome(StepPhase.FAILED, Failure.SESSION_LOST.value, message)
            return outcome

    def _next_attempt(self, run: StepRun) -> None:
        run.attempts += 1
        run.submitted = False
        run.offset = 0
        run.tail.clear()
        run.recovered_agent = None

    async def _attempt(self, run: StepRun, container: str, spec: AgentPoolSpec) -> StepResult:
        """Run (or resume) the current attempt until its result; raise InfrastructureFailure."""
        failures = 0
        hold_until = 0.0
        loop = asyncio.get_running_loop()
        while True:
            namespace, pod, lost = await self._agent_for(run)
            quota = self._quota(spec)
            try:
                opened = await self._session(namespace, pod, container, quota, run)
            except QuotaTimeout as error:
                if not run.submitted:
                    raise InfrastructureFailure(Failure.QUOTA_TIMEOUT, str(error)) from None
                log.warning("step %s/%s waits to be resumed: %s", run.namespace, run.name, error)
                continue
            except ExecConnectError as error:
                failures += 1
                if error.status == 404 or failures >= MAX_SESSION_FAILURES:
                    self._drop_lease_if(pod)
                    raise InfrastructureFailure(Failure.AGENT_LOST, str(error)) from None
                await asyncio.sleep(min(0.05 * 2**failures, 2.0))
                continue
            except (ExecError, SessionLost, OSError) as error:
                failures += 1
                if failures >= MAX_SESSION_FAILURES:
                    raise InfrastructureFailure(Failure.SESSION_LOST, str(error)) from None
                await asyncio.sleep(min(0.05 * 2**failures, 2.0))
                continue
            session = opened.session
            # Before the write: once any of the message may have left, the step may run.
            run.submitted = True
            run.agent, run.session = pod, session.nonce
            try:
                handle = await session.submit(run.request(), offset=run.offset)
            except SessionLost:
                await self._drop_session(namespace, pod, container)
                failures += 1
                continue
            opened.steps += 1
            handle.on_output = lambda _offset, data: run.add_output(data)
            handle.on_started = lambda _pid: self._started(run)
            if handle.pid is not None:
                self._started(run)
            hold_until = loop.time() + MIN_HOLD
            cancel_sent = False
            while True:
                waits: dict[str, Coroutine[Any, Any, Any]] = {
                    "done": handle.wait(),
                    "lost": lost.wait(),
                }
                if not cancel_sent:
                    waits["deleted"] = run.deleted.wait()
                if self.ctx.batching:
                    waits["yield"] = _after(hold_until, quota)
                index = await _first(list(waits.values()))
                first = list(waits)[index] if index is not None else ""
                if first == "done" or handle.done():
                    try:
                        result = await handle.wait()
                    except SessionLost:
                        await self._drop_session(namespace, pod, container)
                        break  # resume in a new session
                    except (StepRejected, StepNotStarted) as error:
                        raise InfrastructureFailure(
                            Failure.SESSION_LOST, f"the agent refused the step: {error}"
                        ) from None
                    if not self.ctx.batching or quota.has_waiters:
                        # Without batching a session serves one step; with it, a session
                        # yields its slot between steps when others wait.
                        await self._close_session(namespace, pod, container)
                    return result
                if first == "lost":
                    await self._drop_session(namespace, pod, container)
                    reason = getattr(self.lease, "lost_reason", "") or "the agent was lost"
                    self._drop_lease_if(pod)
                    raise InfrastructureFailure(Failure.AGENT_LOST, f"agent {pod}: {reason}")
                if first == "deleted":
                    cancel_sent = True
                    with contextlib.suppress(SessionLost):
                        await session.cancel(run.step_id)
                    continue
                # Others wait for the quota while this step runs: give the slot up, poll later.
                await self._drop_session(namespace, pod, container)
                poll = spec.sessions.poll_interval
                await _first([lost.wait(), run.deleted.wait()], within=poll)
                break
            failures = 0 if handle.offset > 0 or handle.pid is not None else failures

    def _started(self, run: StepRun) -> None:
        if run.started_at is not None and run.phase is StepPhase.RUNNING:
            return
        first_start = run.started_at is None
        if first_start:
            run.started_at = now()
            created = run.created_at
            if created is not None:
                latency = max(0.0, (run.started_at - created).total_seconds())
                self.ctx.metrics.step_dispatch_seconds.labels(pool=self.pool).observe(latency)
        run.phase = StepPhase.RUNNING
        assert run.started_at is not None
        self.ctx.agents.notify(self.pool)
        self.ctx.write(
            run,
            {
                **run.base_fields(),
                "phase": StepPhase.RUNNING.value,
                "reason": "Started",
                "message": f"running on agent {run.agent}",
                "agent": run.agent,
                "session": run.session,
                "startedAt": rfc3339(run.started_at),
            },
            RUNNING_DELAY,
        )

    # --- agents -------------------------------------------------------------------------

    async def _agent_for(self, run: StepRun) -> tuple[str, str, asyncio.Event]:
        # Found Running at startup: its output and exit status live on that agent.
        recovered = run.recovered_agent
        if recovered is not None and (self.lease is None or self.lease.pod_name != recovered):
            return run.namespace, recovered, asyncio.Event()
        lease = await self._ensure_lease()
        return lease.namespace, lease.pod_name, lease.lost

    async def _ensure_lease(self) -> Lease:
        if self.lease is not None and not self.lease.lost.is_set():
            return self.lease
        await self._release_lease()
        namespace, build = self.queue.key
        while True:
            try:
                self.lease = await self.ctx.agents.acquire(
                    self.pool, f"{namespace}/{build}", timeout=None
                )
                return self.lease
            except TimeoutError as error:
                log.info("build %s/%s still waits for an agent: %s", namespace, build, error)
            except Exception as error:  # e.g. the pool was deleted while the build waited
                raise InfrastructureFailure(Failure.AGENT_LOST, str(error)) from error

    def _drop_lease_if(self, pod: str) -> None:
        if self.lease is not None and self.lease.pod_name == pod:
            self.lease.lost.set()

    async def _release_lease(self) -> None:
        lease, self.lease = self.lease, None
        self._gathered = False
        if lease is None:
            return
        spec = self.ctx.agents.pool_spec(self.pool)
        delete = lease.lost.is_set() or (spec is not None and spec.ephemeral)
        try:
            await self.ctx.agents.release(lease, delete=delete)
        except Exception:
            log.exception("releasing agent %s of pool %s failed", lease.pod_name, self.pool)

    # --- sessions -----------------------------------------------------------------------

    def _quota(self, spec: AgentPoolSpec) -> ApiQuota:
        quota = self.ctx.agents.quota(self.pool)
        if quota is None:
            raise InfrastructureFailure(
                Failure.QUOTA_TIMEOUT, f"pool {self.pool} has no API quota (was it deleted?)"
            )
        return quota

    async def _session(
        self, namespace: str, pod: str, container: str, quota: ApiQuota, run: StepRun
    ) -> _OpenSession:
        key = (pod, container)
        current = self._sessions.get(key)
        if current is not None and current.session.open:
            spec = self.ctx.agents.pool_spec(self.pool)
            if spec is None or current.steps < spec.sessions.max_steps:
                return current
        if current is not None:
            await self._close_session(namespace, pod, container)
        target = f"{namespace}/{pod}/{container}"
        slot = await quota.acquire("exec", target)
        try:
            stream = await self._open_stream(namespace, pod, container)
            try:
                session = await Session.start(
                    stream,
                    tail_bytes=0,
                    ready_timeout=SESSION_READY_TIMEOUT,
                    state_dir=self.ctx.state_dir,
                )
            except BaseException:
                with contextlib.suppress(Exception):
                    await stream.close()
                raise
        except BaseException:
            quota.release(slot)
            raise
        self.ctx.metrics.exec_sessions.labels(pool=self.pool).inc()
        self.ctx.metrics.exec_sessions_open.labels(pool=self.pool).inc()
        opened = _OpenSession(session, slot, quota, self.pool)
        self._sessions[key] = opened
        return opened

    async def _gather(self, spec: AgentPoolSpec) -> bool:
        """Wait until no step of the build arrived for `sessions.batchWindow`, so that steps
        created together are all seen and start in their order; True when it waited.

        The window counts the operator's progress, not wall time: it is slept in ticks and a
        tick that took longer (a starved thread, a busy loop still delivering the other steps'
        events one by one) counts as one tick. An arrival restarts the window; the whole wait
        is capped at `GATHER_CAP` windows of progress.
        """
        window = spec.sessions.batch_window
        if window <= 0:
            return False
        loop = asyncio.get_running_loop()
        tick = max(window / GATHER_TICKS, 0.001)
        seen, quiet, total = self._arrivals, 0.0, 0.0
        while quiet < window and total < window * GATHER_CAP:
            before = loop.time()
            await asyncio.sleep(tick)
            progress = min(loop.time() - before, tick)
            total += progress
            if self._arrivals != seen:
                seen, quiet = self._arrivals, 0.0
            else:
                quiet += progress
        return True

    async def _open_stream(self, namespace: str, pod: str, container: str) -> Any:
        if self.ctx.open_stream is not None:
            return await self.ctx.open_stream(namespace, pod, container)
        assert self.ctx.exec_api is not None
        return await open_exec(self.ctx.exec_api, namespace, pod, container, BOOTSTRAP_COMMAND)

    async def _close_session(self, namespace: str, pod: str, container: str) -> None:
        opened = self._sessions.pop((pod, container), None)
        if opened is None:
            return
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await opened.session.close()
        except (TimeoutError, Exception):
            await opened.session.abort()
        finally:
            self._closed(opened)

    async def _drop_session(self, namespace: str, pod: str, container: str) -> None:
        opened = self._sessions.pop((pod, container), None)
        if opened is None:
            return
        try:
            await opened.session.abort()
        finally:
            self._closed(opened)

    def _closed(self, opened: _OpenSession) -> None:
        opened.quota.release(opened.slot)
        self.ctx.metrics.exec_sessions_open.labels(pool=self.pool).dec()
        self.ctx.metrics.session_steps.labels(pool=self.pool).observe(opened.steps)

    async def _close_sessions(self) -> None:
        for pod, container in list(self._sessions):
            await self._close_session("", pod, container)

    async def close(self) -> None:
        """Operator shutdown: drop streams (steps keep running in their containers)."""
        for pod, container in list(self._sessions):
            await self._drop_session("", pod, container)


def _classify(result: StepResult, run: StepRun) -> Outcome | None:
    if result.reason == "lost":
        return None
    if result.reason == "cancelled" or run.deleted.is_set():
        return Outcome(
            StepPhase.CANCELLED, "Cancelled", "the BuildStep was deleted", result.exit_code
        )
    if result.reason == "timeout":
        return Outcome(
            StepPhase.FAILED,
            "Timeout",
            f"the step ran longer than its timeout of {run.spec.timeout:g} s and was killed",
            result.exit_code,
        )
    if result.exit_code == 0:
        return Outcome(StepPhase.SUCCEEDED, "Completed", "the script exited 0", 0)
    return Outcome(
        StepPhase.FAILED,
        "ScriptFailed",
        f"the script exited with code {result.exit_code}",
        result.exit_code,
    )


async def _after(moment: float, quota: ApiQuota) -> None:
    """Once others wait for the quota, but not before `moment` (loop time)."""
    delay = moment - asyncio.get_running_loop().time()
    if delay > 0:
        await asyncio.sleep(delay)
    # Created only now: a coroutine made up front would leak un-awaited when cancelled early.
    await quota.wait_for_waiters()


async def _first(
    waits: list[Coroutine[Any, Any, Any]], *, within: float | None = None
) -> int | None:
    """Index of the first awaitable to finish (the others are cancelled); None on timeout."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        done, _ = await asyncio.wait(tasks, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
    for index, task in enumerate(tasks):
        if task in done:
            return index
    return None
