"""The build runner: one task per build that holds its agent and exec sessions and runs its steps.

Steps of a build run one after another on one leased agent. With batching, one exec session per
container of that agent carries every step of the build; it holds one slot of the pool's quota
while open, closes after `sessions.linger` without work, at once when other builds wait for a
session slot (a build boundary), and during a step that ran `sessions.detachAfter` while builds wait
it detaches: the stream is dropped and the step collected later with a new session that
resumes it by offset (`handover` holds these decisions). Nothing runs twice: a
step's start is idempotent in the container (the session protocol's `started` marker), so
resubmitting a step that may have started only watches it. A build never goes on on a new
agent without the workspace a lost agent took with it: `reruns` decides whether the step alone
is retried, fails, or the build runs again from its first step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import Any

from agentpool.kube.backoff import Backoff, BackoffPolicy, is_throttled
from agentpool.kube.exec import ExecError
from agentpool.kube.quota import ApiQuota, QuotaTimeout
from agentpool.model import AgentPoolSpec, StepPhase, WorkspaceIsolation
from agentpool.steps import handover, reruns, workspaces
from agentpool.steps.context import Lease, Leftover, RunnerContext
from agentpool.steps.handover import QuotaState
from agentpool.steps.outcomes import Outcome, classify
from agentpool.steps.runs import AgentRef, Attempt, StepRun
from agentpool.steps.scheduling import Action, BuildQueue, Failure, should_retry
from agentpool.steps.session import SessionLost, StepNotStarted, StepRejected, StepResult
from agentpool.steps.sessions import OpenSession, Sessions
from agentpool.steps.step_status import REMOVED, StepStatus
from agentpool.steps.waits import first_done, until_quota
from agentpool.timestamps import now

__all__ = ["BuildRunner"]

log = logging.getLogger(__name__)

# A session that cannot be (re)opened this many times in a row (throttling aside) makes the
# runner ask the API server whether its agent is gone.
MAX_SESSION_FAILURES = 5
# Re-opening a session into the same agent: throttled or failing, never faster than this.
EXEC_BACKOFF = BackoffPolicy(base=0.1, cap=10.0)
# How often an idle build looks for builds waiting for an agent of its pool.
HAND_OVER_POLL = 0.05
# After a restart, how long a step found Running waits to lease its agent (the pool lists its
# pods first) before it is resumed there without a lease.
RECOVERY_LEASE_WAIT = 10.0
# A step's Running write waits this long, so that a step ending sooner costs one status write;
# it is also the window in which a crashed operator leaves no record of where a step started.
RUNNING_DELAY = 0.1
# A Queued status waits this long before costing a request (a step that starts sooner is
# written once, Running or final): as the engine's own Queued write.
QUEUED_DELAY = 0.5
# The batch window is slept in this many ticks, and lasts at most GATHER_CAP windows.
GATHER_TICKS = 5
GATHER_CAP = 4


class InfrastructureFailure(Exception):
    def __init__(self, failure: Failure, message: str, *, agent: str | None = None) -> None:
        super().__init__(message)
        self.failure = failure
        self.agent = agent  # AgentLost: the agent pod that was lost, when one is known


class _PoolDeleted(Exception):
    """The pool went away during an attempt that is to be retried: the step waits for it."""


class _Rerun(Exception):
    """The build lost its agent and is queued to run again from its first step."""


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
        self._sessions = Sessions(ctx, pool)
        self._pending_pool: set[str] = set()
        # The first step on a new lease waits for its batch window; later ones never do.
        self._gathered = False
        self._arrivals = 0  # steps added so far: the batch window restarts on each
        self._placed: str | None = None  # the agent a status write of this build names
        self._gone_results: set[str] = set()
        # Steps of the build finished in this runner's life, by name: where they ran (their
        # work is in the build's workspace there), how they ended, whether deleted since.
        self._ran: dict[str, tuple[StepRun, reruns.RanStep]] = {}
        # Finished steps whose files (output, exit code) are still on their agent: removed
        # over the open session once their final status is written.
        self._forgettable: list[tuple[str, str, StepRun]] = []
        self._lost_reason = ""  # why the build's last lost agent was lost
        self._lost_agents: set[str] = set()  # agents the build lost (with what ran there)

    # --- queue ------------------------------------------------------------------------

    def add(self, run: StepRun) -> None:
        self.steps[run.name] = run
        self._arrivals += 1
        self.queue.add(run.queued)
        self.wake.set()

    def cancel(self, name: str, message: str) -> bool:
        """The BuildStep was deleted or cancelled: kill it if running (its attempt then ends
        `Cancelled` with `message`); True when it was only queued and is now dropped (the
        caller finishes it)."""
        run = self.steps.get(name)
        if run is None:
            return False
        run.cancel_message = message
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
                    # The build is over: steps appended later start anew, on an agent still
                    # there (the build goes back to its agent, where its workspace is).
                    self._forget_lost_agents()
                    for name in self._gone_results:
                        self.queue.forget(name)
                    self._gone_results.clear()
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
                if self._pending_pool:
                    self._pool_found()
                container = run.spec.container or spec.agent_container
                if container not in spec.container_names:
                    self._reject(
                        run,
                        "ContainerNotFound",
                        f"container {container!r} is not in pool {self.pool} (its containers: "
                        f"{', '.join(spec.container_names)}); set spec.container to one of them",
                    )
                    continue
                if run.attempt is Attempt.WAITING:
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
                except _PoolDeleted:
                    continue  # parked as Pending/PoolNotFound until the pool is back
                except _Rerun:
                    continue  # the build's first step is next in line again
                finally:
                    self.running = None
                if run.submitted and run.agent is not None:
                    ran = reruns.RanStep(run.queued, run.agent, outcome.phase)
                    self._ran[run.name] = (run, ran)
                    self._forgettable.append((run.agent, container, run))
                self._finish(run, outcome)
        except asyncio.CancelledError:
            await self.close()  # operator shutdown: steps go on in their containers
            raise
        except BaseException:
            await self._sessions.close_all()
            await self._release_lease()
            raise

    def _forget_lost_agents(self) -> None:
        """What ran on the agents the build lost no longer matters: the build is over, or
        runs again from its first step."""
        lost = self._lost_agents
        self._ran = {name: ran for name, ran in self._ran.items() if ran[1].agent not in lost}
        self._lost_agents = set()

    def deleted_after_finish(self, name: str, uid: str) -> None:
        """A finished step of the build is deleted: a re-run of the build cannot run it
        again (what it did on its agent still counts as lost with that agent)."""
        entry = self._ran.get(name)
        if entry is not None and entry[0].uid == uid:
            self._ran[name] = (entry[0], replace(entry[1], deleted=True))

    def _finish(self, run: StepRun, outcome: Outcome) -> None:
        self.queue.record(run.name, outcome.phase)
        if run.gone:
            # Deleted while it ran: its cancellation skips the steps queued behind it now, and
            # is forgotten once the build is idle (a failure lasts as long as its step exists).
            self._gone_results.add(run.name)
        self.steps.pop(run.name, None)
        self.ctx.finished(run, outcome)

    def _reject(self, run: StepRun, reason: str, message: str) -> None:
        # The engine records the Warning Event of every non-script failure.
        self._finish(run, Outcome(StepPhase.FAILED, reason, message))

    def _pool_found(self) -> None:
        """The pool exists (again): steps that said PoolNotFound say Queued now, not when they
        run, which may be long after (the pool may have no free agent yet)."""
        for name in self._pending_pool:
            run = self.steps.get(name)
            if run is not None and run.phase is StepPhase.PENDING:
                message = f"waiting for an agent of pool {self.pool} (build {self.queue.key[1]})"
                self.ctx.write(run, StepStatus.queued(message), 0.0)
        self._pending_pool.clear()  # deleted again later: say so again

    async def _wait_for_pool(self) -> None:
        message = f"AgentPool {self.pool} does not exist (yet); the step waits for it"
        for run in self.steps.values():
            if run.name not in self._pending_pool:
                self._pending_pool.add(run.name)
                run.phase = StepPhase.PENDING  # a retried step writes Running again
                waiting = StepStatus(
                    phase=StepPhase.PENDING, reason="PoolNotFound", message=message
                )
                if run.attempts:
                    waiting = waiting.counted(run.attempts, run.generation)
                self.ctx.write(run, waiting, 0.0)
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
            await self._forget_finished()
            await self._sessions.close_all()
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
            waits += self._sessions.handover_waits()
        if hand_over:
            waits.append(self._builds_waiting())
        first = await first_done(waits, within=seconds)
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
                if not run.submitted and self.ctx.agents.pool_spec(self.pool) is None:
                    # No agent because the pool went away (its pods may vanish before its
                    # own deletion is seen): nothing of this attempt ran, so wait for the
                    # pool instead of failing the step.
                    await self._release_lease()
                    raise _PoolDeleted from None
                if failure.failure is Failure.AGENT_LOST:
                    lost = await self._agent_lost(run, failure)  # raises _Rerun to re-run
                    if lost is not None:
                        return lost
                if should_retry(failure.failure, run.attempts, run.spec.retries):
                    log.warning(
                        "step %s/%s attempt %d: %s; retrying",
                        run.namespace,
                        run.name,
                        run.attempts,
                        failure,
                    )
                    self.ctx.event(run, f"Retry{failure.failure.value}", str(failure))
                    run.next_attempt()
                    if self.ctx.agents.pool_spec(self.pool) is None:
                        # Without this the retry would wait for the pool inside acquire,
                        # its status still saying Running on an agent that is gone.
                        await self._release_lease()
                        raise _PoolDeleted from None
                    continue
                return Outcome(StepPhase.FAILED, failure.failure.value, str(failure))
            outcome = classify(result, run)
            if outcome is None:  # the keeper vanished: nothing recoverable
                message = "the step's process vanished without an exit status"
                if should_retry(Failure.SESSION_LOST, run.attempts, run.spec.retries):
                    run.next_attempt()
                    continue
                return Outcome(StepPhase.FAILED, Failure.SESSION_LOST.value, message)
            return outcome

    async def _agent_lost(self, run: StepRun, failure: InfrastructureFailure) -> Outcome | None:
        """The step's agent is lost (`reruns.plan` decides): None when the step alone follows
        the ordinary retry rules (nothing of the build ran there); the step's failure when the
        build's workspace went with the agent and the build is not re-run; raises `_Rerun`
        once the build is queued to run again from its first step."""
        if failure.agent is not None:
            self._lost_agents.add(failure.agent)
        loss = reruns.plan(
            (ran for _, ran in self._ran.values()),
            self._lost_agents,
            stopped=self.queue.stopped,
            retry=should_retry(Failure.AGENT_LOST, run.attempts, run.spec.retries),
            ran_earlier=self.queue.ran_earlier,
        )
        build = self.queue.key[1]
        if loss.verdict is reruns.AgentLoss.STEP_ONLY:
            return None
        if loss.verdict is reruns.AgentLoss.FAIL:
            message = reruns.failed_message(loss, str(failure), build)
            return Outcome(StepPhase.FAILED, Failure.AGENT_LOST.value, message)
        agent = failure.agent or loss.lost_with[-1].agent
        message = reruns.rerun_message(agent, run.name, loss.again[0].name, build)
        log.warning("build %s/%s: %s (%s)", run.namespace, build, message, failure)
        again = [self._ran[step.name][0] for step in loss.again]
        for earlier in again:
            # Forgotten as finished and queued before any write: a deletion from now on
            # finds the step in this runner and cancels it.
            earlier.rerun()
            self.ctx.reopened(earlier)
            self.add(earlier)
            self._rerun_status(earlier, message)
        # Nothing of the re-run may start before the earlier steps say they are pending
        # again: an operator that crashes from here on lists them as not finished and runs
        # them. The lost step says so last: a crash before that leaves it Running on the lost
        # agent, where the next operator finds it lost and retries it after them.
        for earlier in again:
            await self._until_written(earlier)
        if self.lease is not None and self.lease.lost.is_set():
            await self._release_lease()  # before forgetting the lost agents: it names one
        run.rerun()
        self._rerun_status(run, message)
        self._forget_lost_agents()  # queued again, or deleted
        self._forgettable = [f for f in self._forgettable if f[2] not in again]
        raise _Rerun

    def _workspace_lost_with(self) -> str | None:
        """A lost agent on which steps of the build ran, if any, while the build goes on (a
        stopped build's `runPolicy: Always` steps run anyway: they clean up or report, and
        expect no workspace)."""
        if self.queue.stopped:
            return None
        return next((r.agent for _, r in self._ran.values() if r.agent in self._lost_agents), None)

    def _rerun_status(self, run: StepRun, message: str) -> None:
        """The re-run step's pending status (a new attempt) and its one Event."""
        status = StepStatus.rerun(reruns.RERUN_AFTER_AGENT_LOST, message)
        self.ctx.write(run, status.counted(run.attempts, run.generation), 0.0)
        self.ctx.event(run, reruns.RERUN_AFTER_AGENT_LOST, message)

    async def _until_written(self, run: StepRun) -> None:
        """Until the step's status updates are written (or given up: it was deleted); a
        starved quota only delays the write, which goes on in the background."""
        while True:
            try:
                await self.ctx.written(run)
                return
            except QuotaTimeout as error:
                log.info("step %s/%s: its re-run waits for its status: %s", *run.key, error)

    async def _attempt(self, run: StepRun, container: str, spec: AgentPoolSpec) -> StepResult:
        """Run (or resume) the current attempt until its result; raise InfrastructureFailure."""
        failures = 0  # in a row, throttling aside
        backoff = Backoff(EXEC_BACKOFF)
        resuming = False  # collecting a step detached earlier: keep the build's place in line
        loop = asyncio.get_running_loop()
        while True:
            if run.deleted.is_set() and not run.submitted:
                return StepResult(-1, "cancelled", 0)  # deleted while the API server throttled
            namespace, pod, lost = await self._agent_for(run)
            if run.submitted and run.agent is not None and pod != run.agent:
                # The step may have started on its agent, which is gone: resuming it elsewhere
                # would start it again in a workspace that is not the build's.
                raise InfrastructureFailure(
                    Failure.AGENT_LOST,
                    f"agent {run.agent} was lost while the step ran on it"
                    + (f" ({self._lost_reason})" if self._lost_reason else ""),
                    agent=run.agent,
                )
            lost_with = self._workspace_lost_with() if not run.submitted else None
            if lost_with is not None:
                # The agent went between two steps of the build (the step has not started
                # anywhere): the step would start on `pod` without what the others left.
                raise InfrastructureFailure(
                    Failure.AGENT_LOST,
                    f"agent {lost_with} was lost before the step started"
                    + (f" ({self._lost_reason})" if self._lost_reason else ""),
                    agent=lost_with,
                )
            quota = self._quota(spec)
            if not run.submitted and self._placed != pod:
                await self._place(run, pod)
            must_wait = quota.sessions_waiting or quota.sessions_running >= quota.session_limit
            if must_wait and not run.submitted and self._sessions.current(pod, container) is None:
                self._say_queued(self._slot_wait_message(quota))
            try:
                opened = await self._sessions.open(
                    namespace, pod, container, quota, resuming=resuming
                )
            except QuotaTimeout as error:
                if not run.submitted:
                    raise InfrastructureFailure(Failure.QUOTA_TIMEOUT, str(error)) from None
                log.warning("step %s/%s waits to be resumed: %s", run.namespace, run.name, error)
                continue
            except (ExecError, SessionLost, OSError) as error:
                failures = await self._exec_failed(
                    run, (namespace, pod), error, failures=failures, backoff=backoff
                )
                continue
            backoff.succeeded()
            if opened.steps == 0:
                await self._forget_leftovers(pod, container, opened, spec)
            session = opened.session
            # Before the write: once any of the message may have left, the step may run.
            run.sent(AgentRef(pod, session.nonce))
            try:
                handle = await session.submit(
                    run.request(self._workspace(spec, pod)), offset=run.offset
                )
            except SessionLost as error:
                await self._sessions.drop(pod, container)
                failures = await self._exec_failed(
                    run, (namespace, pod), error, failures=failures, backoff=backoff
                )
                continue
            opened.steps += 1
            handle.on_output = lambda _offset, data: run.add_output(data)
            handle.on_started = lambda _pid: self._started(run)
            if handle.pid is not None:
                self._started(run)
            if run.running_since is None:
                run.running_since = loop.time()
            cancel_sent = False
            while True:
                waits: dict[str, Coroutine[Any, Any, Any]] = {
                    "done": handle.wait(),
                    "lost": lost.wait(),
                }
                if not cancel_sent:
                    waits["deleted"] = run.deleted.wait()
                if self.ctx.batching:
                    waits["detach"] = self._detach_wanted(quota, opened, run, spec)
                index = await first_done(list(waits.values()))
                first = list(waits)[index] if index is not None else ""
                if first == "done" or handle.done():
                    try:
                        result = await handle.wait()
                    except SessionLost:
                        await self._sessions.drop(pod, container)
                        break  # resume in a new session
                    except (StepRejected, StepNotStarted) as error:
                        raise InfrastructureFailure(
                            Failure.SESSION_LOST, f"the agent refused the step: {error}"
                        ) from None
                    if handover.close_between_steps(
                        QuotaState.of(quota),
                        batching=self.ctx.batching,
                        held=loop.time() - opened.opened_at,
                        hold=self.ctx.session_hold,
                    ):
                        await self._sessions.close(pod, container)
                    return result
                if first == "lost":
                    await self._sessions.drop(pod, container)
                    reason = getattr(self.lease, "lost_reason", "") or "the agent was lost"
                    self._drop_lease_if(pod)
                    raise InfrastructureFailure(
                        Failure.AGENT_LOST, f"agent {pod}: {reason}", agent=pod
                    )
                if first == "deleted":
                    cancel_sent = True
                    with contextlib.suppress(SessionLost):
                        await session.cancel(run.step_id)
                    continue
                # Other builds wait for a session while this step runs on: give the slot up
                # and collect the result later, ahead of the builds that have not started.
                await self._sessions.drop(pod, container)
                resuming = True
                delay = handover.poll_delay(
                    spec.sessions.poll_interval, loop.time() - run.running_since
                )
                await first_done([lost.wait(), run.deleted.wait()], within=delay)
                break
            failures = 0 if handle.offset > 0 or handle.pid is not None else failures

    async def _forget_finished(self) -> None:
        """The build is done with its sessions: remove its finished steps' files (output, exit
        code) from the agent, so that no later build there finds them. Only steps whose final
        status is written: a restarted operator then reads the status, never the files. The
        others are left to the next session into their container (`_forget_leftovers`)."""
        for pod, container, run in self._forgettable:
            opened = self._sessions.current(pod, container)
            if opened is None or not self.ctx.settled(run.namespace, run.name):
                self.ctx.leave(pod, container, Leftover.of(run))
                continue
            with contextlib.suppress(SessionLost):
                await opened.session.forget(run.step_id)
        self._forgettable = []

    async def _forget_leftovers(
        self, pod: str, container: str, opened: OpenSession, spec: AgentPoolSpec
    ) -> None:
        """A new session into `container`: first remove what earlier builds left there (the
        driver handles messages in order, so before this build's first step): their step
        files, and every workspace on the agent but this build's own. A build's workspace
        stays while no other build has used the agent, since a build's later steps go back to
        the agent its earlier ones ran on; this also removes what an operator restart or a
        lost session left."""
        left = self.ctx.leftovers.pop((pod, container), [])
        if container == spec.agent_container:  # steps that named no container (a restart's)
            left += self.ctx.leftovers.pop((pod, ""), [])
        for step in left:
            if not self.ctx.settled(step.namespace, step.name):
                self.ctx.leave(pod, container, step)
                continue
            with contextlib.suppress(SessionLost):
                await opened.session.forget(step.step_id)
        if spec.workspace.isolation is WorkspaceIsolation.PER_BUILD:
            keep = workspaces.for_build(*self.queue.key)
            with contextlib.suppress(SessionLost):
                await opened.session.clean_workspaces(workspaces.for_agent(pod), keep)

    def _workspace(self, spec: AgentPoolSpec, pod: str) -> str | None:
        if spec.workspace.isolation is not WorkspaceIsolation.PER_BUILD:
            return None
        return workspaces.workspace(pod, *self.queue.key)

    async def _exec_failed(
        self,
        run: StepRun,
        where: tuple[str, str],
        error: Exception,
        *,
        failures: int,
        backoff: Backoff,
    ) -> int:
        """Back off before the same agent is tried again; returns the failures in a row.

        Throttling (429/503, the server's Retry-After honoured) is waited out however long it
        lasts and never counts: the agent and its workspace stay the build's. Other failures
        count; a 404, or `MAX_SESSION_FAILURES` in a row, asks the API server whether the pod
        is really gone or terminal: only then is the agent lost (AgentLost). An agent that is
        alive but keeps refusing fails the attempt as SessionLost (retried per spec.retries on
        the same agent, which the build keeps)."""
        namespace, pod = where
        status = getattr(error, "status", None)
        retry_after = getattr(error, "retry_after", None)
        throttled = is_throttled(status)
        if not throttled:
            failures += 1
            if status == 404 or failures >= MAX_SESSION_FAILURES:
                gone = await self.ctx.agents.agent_gone(self.pool, namespace, pod)
                if gone is not None:
                    self._drop_lease_if(pod)
                    raise InfrastructureFailure(
                        Failure.AGENT_LOST, f"agent {pod}: {gone}", agent=pod
                    )
                if failures >= MAX_SESSION_FAILURES:
                    raise InfrastructureFailure(
                        Failure.SESSION_LOST,
                        f"{error} ({failures} times in a row; agent {pod} is still running)",
                    )
        delay = backoff.failed(str(error), retry_after=retry_after)
        log.log(
            logging.INFO if throttled else logging.WARNING,
            "step %s/%s: %s; trying agent %s again in %.1f s%s",
            run.namespace,
            run.name,
            error,
            pod,
            delay,
            " (the API server asks for patience)" if throttled else "",
        )
        await first_done([run.deleted.wait()], within=delay)
        return failures

    def _detach_wanted(
        self, quota: ApiQuota, opened: OpenSession, run: StepRun, spec: AgentPoolSpec
    ) -> Coroutine[Any, Any, None]:
        """Wait until the running step should give its session up (`handover.detach_mid_step`)."""
        hold_until = opened.opened_at + max(self.ctx.session_hold, handover.MIN_HOLD)
        started = run.running_since if run.running_since is not None else opened.opened_at
        detach_at = started + spec.sessions.detach_after

        def wanted(now: float) -> bool:
            return handover.detach_mid_step(
                QuotaState.of(quota),
                held=now - opened.opened_at,
                hold=self.ctx.session_hold,
                running_for=now - started,
                detach_after=spec.sessions.detach_after,
            )

        return until_quota(quota, wanted, (hold_until, detach_at))

    async def _place(self, run: StepRun, pod: str) -> None:
        """Record where the build runs before its first step there may start: an operator
        that crashes before the step's Running write then still knows where to look
        (`_home_agent`), and the agent's start marker keeps the step from running twice.
        Later steps on the same agent need no such write: this one names the agent."""
        placed = StepStatus(agent=pod, message=f"starting on agent {pod}")
        self.ctx.write(run, placed.counted(run.attempts, run.generation), 0.0)
        # Before the session: a status write needs a quota slot that the session could hold.
        try:
            await self.ctx.written(run)
        except QuotaTimeout as error:
            self.ctx.write(run, StepStatus(agent=REMOVED), 0.0)  # it never got there
            raise InfrastructureFailure(Failure.QUOTA_TIMEOUT, str(error)) from None
        run.home = self._placed = pod

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
        assert run.sent_to is not None  # started: it was sent
        running = replace(StepStatus.running(run.sent_to), started_at=run.started_at)
        self.ctx.write(run, running.counted(run.attempts, run.generation), RUNNING_DELAY)

    # --- agents -------------------------------------------------------------------------

    async def _agent_for(self, run: StepRun) -> tuple[str, str, asyncio.Event]:
        # Found Running at startup: its output and exit status live on that agent.
        recovered = run.recovered_agent
        if recovered is not None and self.lease is None:
            # Lease that agent (preferred), so no other build takes it and no scale-down
            # removes it; unless another build holds it or it is gone: then resume there
            # without a lease and run the rest of the build on whatever agent was leased.
            with contextlib.suppress(TimeoutError):
                await self._ensure_lease(within=RECOVERY_LEASE_WAIT)
        if recovered is not None and (self.lease is None or self.lease.pod_name != recovered):
            return run.namespace, recovered, asyncio.Event()
        lease = await self._ensure_lease()
        return lease.namespace, lease.pod_name, lease.lost

    def _home_agent(self) -> str | None:
        """The agent this build belongs on: where a step of it still runs (found Running
        after a restart), else where a step of it was placed (perhaps started before a
        crash), else where its latest step ran (its workspace is there)."""
        for run in self.steps.values():
            if run.recovered_agent is not None:
                return run.recovered_agent
        for run in self.steps.values():
            if run.home is not None:
                return run.home
        return self.queue.agent

    async def _ensure_lease(self, within: float | None = None) -> Lease:
        """The build's lease; waits for an agent as long as it takes, or raises
        TimeoutError after `within` seconds."""
        if self.lease is not None and not self.lease.lost.is_set():
            return self.lease
        await self._release_lease()
        namespace, build = self.queue.key
        while True:
            if self.ctx.agents.pool_spec(self.pool) is None:
                # Deleted during an attempt (its agent's session broke first): the caller
                # parks the build until the pool is back; waiting inside acquire would leave
                # the step saying Running on an agent that is gone.
                raise InfrastructureFailure(
                    Failure.AGENT_LOST, f"AgentPool {self.pool} was deleted"
                )
            self._say_queued(self._agent_wait_message())
            try:
                self.lease = await self.ctx.agents.acquire(
                    self.pool, f"{namespace}/{build}", within=within, prefer=self._home_agent
                )
                self.queue.agent = self.lease.pod_name
                return self.lease
            except TimeoutError as error:
                if within is not None:
                    raise
                log.info("build %s/%s still waits for an agent: %s", namespace, build, error)
            except Exception as error:  # e.g. the pool was deleted while the build waited
                raise InfrastructureFailure(Failure.AGENT_LOST, str(error)) from error

    def _say_queued(self, message: str) -> None:
        """What the build's next step waits for, in its Queued status (merged into the write
        still pending, if any: the build's next step is written Queued anyway)."""
        decision = self.queue.next()
        run = self.steps.get(decision.step.name) if decision is not None else None
        if run is None or run.submitted or run.phase is not StepPhase.PENDING:
            return
        self.ctx.write(run, StepStatus.queued(message), QUEUED_DELAY)

    def _agent_wait_message(self) -> str:
        spec = self.ctx.agents.pool_spec(self.pool)
        ahead = self.ctx.agents.waiting_builds(self.pool)
        limit = f" (spec.maxAgents {spec.max_agents})" if spec is not None else ""
        return (
            f"waiting for a free agent of pool {self.pool}{limit}, "
            f"{ahead} build(s) ahead of this one (build {self.queue.key[1]})"
        )

    def _slot_wait_message(self, quota: ApiQuota) -> str:
        return (
            f"waiting for an API connection of pool {self.pool}: {quota.sessions_running} "
            f"exec sessions open, the most spec.apiConnections.max {quota.limit} allows "
            f"({quota.session_limit}), {quota.sessions_waiting} build(s) ahead of this one "
            f"(build {self.queue.key[1]})"
        )

    def _drop_lease_if(self, pod: str) -> None:
        if self.lease is not None and self.lease.pod_name == pod:
            self.lease.lost.set()

    async def _release_lease(self) -> None:
        lease, self.lease = self.lease, None
        self._gathered = False
        if lease is None:
            return
        if lease.lost.is_set():
            self._lost_reason = lease.lost_reason
            self._lost_agents.add(lease.pod_name)
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

    async def close(self) -> None:
        """Operator shutdown: drop streams (steps keep running in their containers)."""
        await self._sessions.drop_all()
