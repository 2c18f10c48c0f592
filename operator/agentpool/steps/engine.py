"""The BuildStep engine: turns BuildStep events into build runners and step status.

`on_step_event` is fed every BuildStep event (kopf lists existing objects first, so after a
restart Running steps are resumed from the agent and offset in their status, and Queued or
Pending ones are scheduled). Bad input fails the step with a clear reason and an Event; a step
of a pool that does not exist yet waits as Pending/PoolNotFound. Status goes through the
`StepStatusWriter`; runners do the work (see `runner`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from kubernetes_asyncio.client import ApiClient

from agentpool.config import Config
from agentpool.kube import client as kube
from agentpool.kube.events import WARNING, EventRecorder, ObjectRef
from agentpool.kube.exec import ExecApiClient
from agentpool.metrics import METRICS, Catalogue
from agentpool.model import API_VERSION, BuildStepSpec, SpecError, StepCounts, StepPhase
from agentpool.steps import logs
from agentpool.steps.context import AgentSource, Leftover, RunnerContext
from agentpool.steps.outcomes import Outcome
from agentpool.steps.retention import Retention, StepRef
from agentpool.steps.runner import QUEUED_DELAY, BuildRunner
from agentpool.steps.runs import Attempt, StepRun
from agentpool.steps.scheduling import BuildQueue
from agentpool.steps.status import Patcher, StepStatusWriter
from agentpool.steps.step_status import StepStatus
from agentpool.timestamps import now, parse_time

__all__ = ["StepEngine"]

log = logging.getLogger(__name__)

RunnerKey = tuple[str, str, str]  # namespace, build, pool
# Finished steps remembered so that the echoes of our own status writes are ignored.
FINISHED_MEMORY = 100_000
# Builds whose agent is remembered after they went idle: a step appended later still finds
# the build's workspace.
BUILD_AGENT_MEMORY = 10_000
CANCEL_ANNOTATION = "agentpool.dev/cancel"
CANCEL_MESSAGE = f"cancelled with the annotation {CANCEL_ANNOTATION}=true"


def _cancel_asked(meta: Mapping[str, Any]) -> bool:
    annotations = meta.get("annotations") or {}
    return isinstance(annotations, Mapping) and annotations.get(CANCEL_ANNOTATION) == "true"


def _spec_reason(error: SpecError) -> str:
    if error.field == "spec.script":
        return "InvalidScript"
    if error.field.startswith("spec.container"):
        return "InvalidContainer"
    return "InvalidSpec"


class StepEngine:
    """Schedules BuildSteps onto agents and keeps their status; one per operator."""

    def __init__(
        self,
        config: Config,
        agents: AgentSource,
        *,
        api: ApiClient | None = None,
        exec_api: ExecApiClient | None = None,
        events: EventRecorder | None = None,
        metrics: Catalogue = METRICS,
        patch: Patcher | None = None,
    ) -> None:
        self.config = config
        self.agents = agents
        self._api = api
        self._exec_api = exec_api
        self._events = events
        self._metrics = metrics
        if patch is None:
            if api is None:
                raise ValueError("StepEngine needs an ApiClient or a patch function")
            patch = self._patch_status
        self.writer = StepStatusWriter(patch, agents.quota)
        self.context = RunnerContext(
            exec_api=exec_api,
            agents=agents,
            write=self._write,
            finished=self._finished,
            metrics=metrics,
            batching=config.batching,
            build_grace=config.build_grace,
            session_hold=config.session_hold,
            tail_bytes=config.log_tail_bytes,
            state_dir=config.agent_state_dir,
            event=self._event,
            written=lambda run: self.writer.written(run.namespace, run.name),
            settled=self.writer.settled,
            reopened=self._reopened,
        )
        self._queues: dict[RunnerKey, BuildQueue] = {}
        self._runners: dict[RunnerKey, BuildRunner] = {}
        self._tasks: dict[RunnerKey, asyncio.Task[None]] = {}
        self._index: dict[tuple[str, str], tuple[str, RunnerKey]] = {}  # step -> (uid, runner)
        self._finished_uids: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._build_agents: collections.OrderedDict[RunnerKey, str] = collections.OrderedDict()
        self.retention = Retention(self._delete_step, self._pool_ttl, agents.quota)
        self._retention_task: asyncio.Task[None] | None = None
        self.on_finished: Callable[[StepRun, Outcome], None] | None = None  # tests, bench

    async def _delete_step(self, namespace: str, name: str, uid: str) -> None:
        if self._api is None:
            raise RuntimeError("no API client to delete finished steps with")
        await kube.delete_object(self._api, kube.BUILDSTEPS, namespace, name, uid=uid)

    def _pool_ttl(self, pool: str) -> int | None:
        spec = self.agents.pool_spec(pool)
        return spec.step_ttl if spec is not None else None

    def _retain(self, ref: StepRef, ttl: int | None, finished: datetime | None) -> None:
        """A step is final: hand it to retention (started on first use, inside the loop)."""
        if self._retention_task is None:
            self._retention_task = asyncio.create_task(self.retention.run(), name="retention")
        self.retention.keep(ref, finished, ttl)

    async def _patch_status(self, namespace: str, name: str, fields: dict[str, Any]) -> None:
        assert self._api is not None
        await kube.patch_status(self._api, kube.BUILDSTEPS, namespace, name, fields)

    # --- events in ----------------------------------------------------------------------

    async def on_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """The Runtime's entry point (kopf handler); see `on_step_event`."""
        self.on_step_event(event_type, body)

    def on_step_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """Handle one BuildStep watch event (type None: seen in the initial listing)."""
        meta = body.get("metadata") or {}
        namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
        uid = str(meta.get("uid", ""))
        if event_type == "DELETED" or meta.get("deletionTimestamp"):
            self._deleted(namespace, name, uid, gone=event_type == "DELETED")
            self._forget_result(namespace, name, uid, body, gone=event_type == "DELETED")
            if event_type == "DELETED":
                self.retention.forget(uid)
            return
        cancel = _cancel_asked(meta)
        known = self._index.get((namespace, name))
        if known is not None:
            if known[0] == uid:
                if cancel:
                    self._cancel(namespace, name, uid)
                return  # mostly the echo of our own status writes
            self._deleted(namespace, name, known[0], gone=True)  # replaced: same name, new uid
        if uid in self._finished_uids:
            return
        status = body.get("status") or {}
        phase = _phase(status.get("phase"))
        try:
            spec = BuildStepSpec.from_body(body.get("spec") or {}, name=name)
        except SpecError as error:
            if phase is None or not phase.is_final:
                self._reject(body, uid, _spec_reason(error), str(error))
            else:
                self._remember(uid)
            return
        pool = f"{namespace}/{spec.pool}"
        key: RunnerKey = (namespace, spec.build, pool)
        queue = self._queues.get(key) or self._queues.setdefault(
            key, BuildQueue((namespace, spec.build), agent=self._build_agents.get(key))
        )
        if phase is not None and phase.is_final:
            queue.record(name, phase)
            agent = status.get("agent")
            finished = parse_time(status.get("finishedAt"))
            if isinstance(agent, str) and agent:
                queue.ran_on(agent, finished)
                self._leave_files(body, spec, agent)
            self._retain((namespace, name, uid, pool), spec.ttl, finished)
            self._remember(uid)
            return
        run = StepRun(
            namespace=namespace,
            name=name,
            uid=uid,
            pool=pool,
            spec=spec,
            created=str(meta.get("creationTimestamp", "")),
            generation=meta.get("generation"),
            tail_limit=self.config.log_tail_bytes,
        )
        if phase is StepPhase.RUNNING:
            for field_name, value in StepRun.recovered_state(status).items():
                setattr(run, field_name, value)
            if run.attempt is Attempt.RECOVERED:  # it may be running: resume, never start again
                tail = status.get("logTail")
                if isinstance(tail, str):
                    run.add_output(tail.encode())
                    run.offset = int(status.get("logBytes") or 0)
        else:
            if isinstance(status.get("attempts"), int):
                run.attempts = max(0, int(status["attempts"]))
            agent = status.get("agent")
            if isinstance(agent, str) and agent:
                run.home = agent  # sent there, maybe, before a crash: go there again
        self._index[(namespace, name)] = (uid, key)
        runner = self._runner(key, queue, pool)
        runner.add(run)
        self.agents.notify(pool)
        if cancel:
            self._cancel(namespace, name, uid)  # created (or found) with the annotation set
            return
        head = queue.next()
        # Only the build's next step says Queued: the others wait for their own build, and a
        # write each would double the API requests of a queued build (the final phase is one
        # request per step already). A write not yet sent merges into the step's next one.
        if phase is not StepPhase.RUNNING and head is not None and head.step.name == name:
            message = f"waiting for an agent of pool {pool} (build {spec.build})"
            queued = replace(StepStatus.queued(message), observed_generation=run.generation)
            self._write(run, queued, QUEUED_DELAY)

    def pool_changed(self, pool: str) -> None:
        """An AgentPool appeared or changed: steps waiting for it look again, and finished
        steps follow its retention default."""
        self.context.pools_changed.set()
        self.retention.pool_changed(pool)

    # --- status out ---------------------------------------------------------------------

    def _write(self, run: StepRun, status: StepStatus, delay: float) -> None:
        if run.deleted.is_set() and status.phase is not StepPhase.CANCELLED:
            return
        self.writer.update(run.namespace, run.name, run.pool, _of_build(run, status), delay=delay)

    def _finished(self, run: StepRun, outcome: Outcome) -> None:
        run.phase = outcome.phase
        self._index.pop((run.namespace, run.name), None)
        self._remember(run.uid)
        self._metrics.steps.labels(pool=run.pool, phase=outcome.phase.value).inc()
        status = StepStatus(
            phase=outcome.phase,
            reason=outcome.reason,
            message=outcome.message,
            agent=run.sent_to.agent if run.sent_to is not None else None,
            session=run.sent_to.session if run.sent_to is not None else None,
            exit_code=outcome.exit_code,
            started_at=run.started_at,
            finished_at=now(),
            log_bytes=run.offset,
            log_tail=run.log_tail(),
        ).counted(run.attempts, run.generation)
        if outcome.phase is StepPhase.FAILED:
            # Every failed step, script failures included; no Events for routine phases,
            # which would double the API writes per step.
            self._event(run, outcome.reason, outcome.message)
        if run.gone:
            # A status write would only answer 404.
            self.writer.forget(run.namespace, run.name)
        else:
            self.writer.update(run.namespace, run.name, run.pool, _of_build(run, status), delay=0.0)
            self._retain((run.namespace, run.name, run.uid, run.pool), run.spec.ttl, None)
        self.agents.notify(run.pool)
        if self.on_finished is not None:
            self.on_finished(run, outcome)

    def _leave_files(self, body: Mapping[str, Any], spec: BuildStepSpec, agent: str) -> None:
        """A step finished under an earlier operator (seen final in the listing after a
        restart, or written by another replica): its files (script, output, exit code) may
        still be on its agent, since that operator may have stopped before forgetting them.
        The next session into the container forgets them before its first step, as for the
        steps this operator finished, so that no later build finds another's output."""
        meta = body.get("metadata") or {}
        attempts = (body.get("status") or {}).get("attempts")
        if not isinstance(attempts, int) or attempts < 1:
            return  # never started on an agent: no files
        namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
        step = Leftover(namespace, name, logs.step_dir_id(dict(body)))
        self.context.leave(agent, spec.container or "", step)

    def _reject(self, body: Mapping[str, Any], uid: str, reason: str, message: str) -> None:
        meta = body.get("metadata") or {}
        namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
        self._remember(uid)
        pool_name = (body.get("spec") or {}).get("pool")
        pool = f"{namespace}/{pool_name}" if isinstance(pool_name, str) and pool_name else ""
        build = (body.get("spec") or {}).get("build")
        status = StepStatus(
            phase=StepPhase.FAILED,
            build=build if isinstance(build, str) and build else name,
            reason=reason,
            message=message,
            finished_at=now(),
        )
        self.writer.update(namespace, name, pool, status.patch())
        if self._events is not None:
            self._events.record(ObjectRef.of(_with_kind(body)), WARNING, reason, message)
        if pool:
            self._metrics.steps.labels(pool=pool, phase=StepPhase.FAILED.value).inc()

    def _event(self, run: StepRun, reason: str, message: str) -> None:
        if self._events is None:
            return
        ref = ObjectRef(API_VERSION, "BuildStep", run.namespace, run.name, run.uid)
        self._events.record(ref, WARNING, reason, message, quota=self.agents.quota(run.pool))

    def _remember(self, uid: str) -> None:
        self._finished_uids[uid] = None
        while len(self._finished_uids) > FINISHED_MEMORY:
            self._finished_uids.popitem(last=False)

    # --- runners ------------------------------------------------------------------------

    def _runner(self, key: RunnerKey, queue: BuildQueue, pool: str) -> BuildRunner:
        runner = self._runners.get(key)
        if runner is None:
            runner = BuildRunner(self.context, queue, pool)
            self._runners[key] = runner
            self._tasks[key] = asyncio.create_task(
                self._run(key, runner), name=f"build-{key[0]}/{key[1]}"
            )
        return runner

    async def _run(self, key: RunnerKey, runner: BuildRunner) -> None:
        def done(finished: BuildRunner) -> bool:
            if len(finished.queue):
                return False
            self._runners.pop(key, None)
            self._tasks.pop(key, None)
            if finished.queue.agent is not None:
                self._build_agents[key] = finished.queue.agent
                self._build_agents.move_to_end(key)
                while len(self._build_agents) > BUILD_AGENT_MEMORY:
                    self._build_agents.popitem(last=False)
            if not finished.queue.stopped:
                self._queues.pop(key, None)  # its agent is remembered above
            return True

        try:
            await runner.run(done)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("build %s/%s on pool %s crashed", *key)
            self._runners.pop(key, None)
            self._tasks.pop(key, None)
            for run in list(runner.steps.values()):
                message = "the operator's build runner failed; see the operator's log"
                self._finished(run, Outcome(StepPhase.FAILED, "InternalError", message))

    def _deleted(self, namespace: str, name: str, uid: str, *, gone: bool) -> None:
        """Deleting a BuildStep cancels it: dropped if queued, its process group killed if
        running. While finalizers keep the object (`gone` False) it ends up `Cancelled`."""
        known = self._index.get((namespace, name))
        if known is None or (uid and known[0] != uid):
            if gone:
                self.writer.forget(namespace, name)
            return
        runner = self._runners.get(known[1])
        run = runner.steps.get(name) if runner is not None else None
        if runner is None or run is None:
            self._index.pop((namespace, name), None)
            if gone:
                self.writer.forget(namespace, name)
            return
        run.gone = run.gone or gone
        if runner.cancel(name, "the BuildStep was deleted"):
            message = "the BuildStep was deleted before it ran"
            self._finished(run, Outcome(StepPhase.CANCELLED, "Deleted", message))
        # A running step ends through its runner, once its process group is killed.

    def _cancel(self, namespace: str, name: str, uid: str) -> None:
        """The cancel annotation: a queued step ends `Cancelled` at once, a running one once
        its process group is killed; either way the build's later OnSuccess steps are
        `Skipped` (PreviousStepCancelled) while the cancelled step exists."""
        known = self._index.get((namespace, name))
        if known is None or known[0] != uid:
            return
        runner = self._runners.get(known[1])
        run = runner.steps.get(name) if runner is not None else None
        if runner is None or run is None or run.deleted.is_set():
            return
        if runner.cancel(name, CANCEL_MESSAGE):
            runner.queue.record(name, StepPhase.CANCELLED)
            self._finished(run, Outcome(StepPhase.CANCELLED, "Cancelled", CANCEL_MESSAGE))

    def _forget_result(
        self, namespace: str, name: str, uid: str, body: Mapping[str, Any], *, gone: bool
    ) -> None:
        """A step being deleted is never run again by a re-run of its build; once gone, its
        failure or cancellation no longer stops its build (re-run)."""
        try:
            spec = BuildStepSpec.from_body(body.get("spec") or {}, name=name)
        except SpecError:
            return
        key = (namespace, spec.build, f"{namespace}/{spec.pool}")
        runner = self._runners.get(key)
        if runner is not None:
            runner.deleted_after_finish(name, uid)
        queue = self._queues.get(key)
        if queue is not None and gone:
            queue.forget(name)

    def _reopened(self, run: StepRun) -> None:
        """A finished step runs again in a re-run of its build: its events go to its runner
        again (not ignored as a finished step's), and retention no longer deletes it."""
        self._finished_uids.pop(run.uid, None)
        self.retention.forget(run.uid)
        self._index[(run.namespace, run.name)] = (
            run.uid,
            (run.namespace, run.spec.build, run.pool),
        )

    # --- queries ------------------------------------------------------------------------

    def counts(self, pool: str) -> StepCounts:
        """Steps queued and running for a pool (its status.steps)."""
        queued = running = 0
        for (_, _, runner_pool), runner in self._runners.items():
            if runner_pool != pool:
                continue
            running += 1 if runner.running is not None else 0
            queued += max(0, runner.queued_count)
        return StepCounts(queued=queued, running=running)

    async def read_step_log(
        self, namespace: str, name: str, write: Callable[[bytes], object]
    ) -> int:
        """Stream a step's whole output (see `steps.logs`), through its pool's quota."""
        if self._api is None or self._exec_api is None:
            raise RuntimeError("read_step_log needs the API clients")
        known = self._index.get((namespace, name))
        quota = self.agents.quota(known[1][2]) if known is not None else None
        return await logs.read_step_log(
            self._api,
            self._exec_api,
            namespace,
            name,
            write,
            quota=quota,
            state_dir=self.context.state_dir,
        )

    # --- lifecycle ----------------------------------------------------------------------

    async def flush(self) -> None:
        """Wait until every status update made so far is written."""
        await self.writer.flush()

    async def close(self) -> None:
        """The Runtime's shutdown hook; see `stop`."""
        await self.stop()

    async def stop(self) -> None:
        """Shutdown: stop runners (steps keep running in their containers) and the writer."""
        tasks = list(self._tasks.values())
        if self._retention_task is not None:
            tasks.append(self._retention_task)
            self._retention_task = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for runner in list(self._runners.values()):
            await runner.close()
            for run in runner.steps.values():
                self._hand_over(run)
        self._runners.clear()
        self._tasks.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5.0):
                await self.writer.flush()
        await self.writer.close()

    def _hand_over(self, run: StepRun) -> None:
        """Record where a step that may be running lives, for the next operator to resume
        it there: a Running status not written yet (it is delayed to coalesce with the final
        one) would make the next operator start it again, maybe on another agent."""
        if not run.submitted or run.sent_to is None:
            return
        status = replace(
            StepStatus.running(run.sent_to),
            started_at=run.started_at,
            log_bytes=run.offset,
            log_tail=run.log_tail(),
        ).counted(run.attempts, run.generation)
        self.writer.update(run.namespace, run.name, run.pool, _of_build(run, status))


def _of_build(run: StepRun, status: StepStatus) -> dict[str, Any]:
    """The patch of a phase change, naming the step's build: `status.build` fills the BUILD
    column and field selectors when spec.build is left to its default (the step's name)."""
    if status.phase is not None:
        status = replace(status, build=run.spec.build)
    return status.patch()


def _phase(value: object) -> StepPhase | None:
    try:
        return StepPhase(str(value)) if value else None
    except ValueError:
        return None


def _with_kind(body: Mapping[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "BuildStep", **dict(body)}
