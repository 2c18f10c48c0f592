"""The AgentPool controller: one level-based reconcile loop per pool.

Each `PoolController` rebuilds its view of agents from pods (label selector plus
`manifest.is_agent_of`, so after a restart it neither duplicates nor orphans agents),
classifies them with `readiness.classify`, asks `scaling.plan` what to do, and carries
the plan out through the pool's `ApiQuota`. It is woken by watch events, by its own
finished API calls and by the next moment a timed rule can fire; it never polls.

Builds lease started agents with `PoolManager.acquire` / `release`. A leased agent is
busy: the plan never deletes it, and its lease's `lost` event fires when it dies.

Every API call that fails is retried with the shared back-off (`kube.backoff`), one tracker
per pool and kind of call (`FailureSeries`: creations, deletions, the pod list, the pass
itself). A failed creation holds further creations (`hold_creations_until`) and, while it
lasts, creations go one at a time; a failed deletion holds deletions. Humans hear of a
failure once, then at most once per `failure_report_interval` with the count.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException

from agentpool import timestamps
from agentpool.kube import client as kube
from agentpool.kube.backoff import (
    Backoff,
)
from agentpool.kube.events import NORMAL, WARNING, EventRecorder, ObjectRef
from agentpool.kube.failures import ApiFailure, FailureSeries, Report, api_message
from agentpool.kube.quota import ApiQuota, QuotaRegistry
from agentpool.metrics import METRICS, Catalogue
from agentpool.model import (
    AgentPoolSpec,
    ApiConnectionsStatus,
    Condition,
    SpecError,
    StepCounts,
)
from agentpool.pool import assignment, manifest, readiness, scaling
from agentpool.pool.agents import AgentRecord, PodView
from agentpool.pool.lease import AgentLease, LeaseTimeout, PoolGone
from agentpool.pool.publisher import PoolStatusPublisher
from agentpool.pool.readiness import AgentState
from agentpool.pool.settings import ControllerSettings
from agentpool.pool.status import creation_failures, launch_failures, with_conditions
from agentpool.timestamps import parse_time

__all__ = ["PoolController"]

_log = logging.getLogger(__name__)

# Deletions that make room for a fresh agent are replacements; the others shrink the pool.
_REPLACING = frozenset(
    {
        scaling.DeletionReason.FAILED,
        scaling.DeletionReason.LOST_CLEANUP,
        scaling.DeletionReason.TEMPLATE_CHANGED,
    }
)
_AGENT_STATES = ("starting", "idle", "busy", "failed")
# Used while a spec cannot be parsed: the status must still be written through a quota.
_FALLBACK_LIMIT = 32
_FALLBACK_QUEUE_TIMEOUT = 30.0


def _earliest(*moments: datetime | None) -> datetime | None:
    present = [m for m in moments if m is not None]
    return min(present) if present else None


@dataclass(eq=False)
class _Waiter:
    build_key: str
    since: datetime
    future: asyncio.Future[AgentLease]
    # Asked on each assignment: steps of the build may still be arriving (after a restart).
    prefer: Callable[[], str | None] | None = None


class PoolController:
    """Keeps one AgentPool's agents as its spec asks (see the module docstring)."""

    def __init__(
        self,
        key: str,
        body: Mapping[str, Any],
        *,
        api: ApiClient,
        quotas: QuotaRegistry,
        events: EventRecorder,
        settings: ControllerSettings,
        metrics: Catalogue = METRICS,
        step_counts: Callable[[], StepCounts] | None = None,
        problems: Callable[[], list[tuple[str, str]]] | None = None,
    ) -> None:
        self.key = key
        self.namespace, self.name = key.split("/", 1)
        self.api = api
        self._quotas = quotas
        self._events = events
        self._settings = settings
        self._metrics = metrics
        self._step_counts = step_counts or StepCounts
        self._problems = problems or list
        self.status_target = f"agentpools/{self.namespace}/{self.name}/status"

        self.body: dict[str, Any] = {}
        self.uid = ""
        self.spec: AgentPoolSpec | None = None
        self.spec_error: SpecError | None = None
        self.template_hash = ""
        self.generation: int | None = None
        self.quota: ApiQuota = quotas.ensure(key, _FALLBACK_LIMIT, _FALLBACK_QUEUE_TIMEOUT)
        self._invalid_reported: int | None = -1

        self.view = PodView()
        self.records: dict[str, AgentRecord] = {}
        self._waiters: collections.deque[_Waiter] = collections.deque()
        self.pending_creations = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._synced_at: datetime | None = None
        # Pods found by the first list: agents of an earlier operator, adopted as they are.
        self._adopted: set[str] = set()
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._stopped = False

        # Launches that failed in a row (rejected pods, agents that never became ready);
        # from backoff_after on, each extends a hold on creations.
        self.failure_streak = 0
        self._last_failure = ""
        self._launch_hold = Backoff(settings.launch_backoff)
        policy, every = settings.api_backoff, settings.failure_report_interval
        self._creates = FailureSeries(policy, report_every=every)
        self._deletes = FailureSeries(policy, report_every=every)
        self._lists = FailureSeries(policy, report_every=every)
        self._passes = FailureSeries(policy, report_every=every)
        self._status_writes = FailureSeries(policy, report_every=every)
        self._publisher = PoolStatusPublisher(
            key,
            self._write_status,
            settings.status_interval,
            failed=self._status_write_failed,
            succeeded=lambda: self._recovered("writing the pool's status", self._status_writes),
        )
        self.update(body)

    # --- inputs --------------------------------------------------------------------------

    def update(self, body: Mapping[str, Any]) -> None:
        """A new version of the AgentPool: parse its spec and follow it live."""
        self.body = dict(body)
        meta = self.body.get("metadata") or {}
        self.uid = str(meta.get("uid", ""))
        generation = meta.get("generation")
        self.generation = generation if isinstance(generation, int) else None
        raw_spec = self.body.get("spec") or {}
        try:
            spec = AgentPoolSpec.from_body(raw_spec)
        except SpecError as error:
            self.spec, self.spec_error = None, error
        else:
            self.spec, self.spec_error = spec, None
            template_hash = manifest.template_hash(raw_spec["template"])
            if template_hash != self.template_hash and self.template_hash:
                # A new template is the user's fix for failing launches (or for creations an
                # admission webhook fails): try it now, not after a hold earned by the old one.
                self._launches_succeeded()
                self._creates.succeeded()
            self.template_hash = template_hash
            self.quota = self._quotas.ensure(
                self.key, spec.api_connections.max, spec.api_connections.queue_timeout
            )
        self.wake()

    def observe_pod(self, event_type: str | None, pod: Mapping[str, Any]) -> None:
        """A pod from the watch; only this pool's agents are kept."""
        if not manifest.is_agent_of(pod, self.body):
            return
        name = str((pod.get("metadata") or {}).get("name", ""))
        changed = (
            self.view.forget(name, timestamps.now(), pod)
            if event_type == "DELETED"
            else self.view.observe(pod, timestamps.now())
        )
        if changed:
            self.wake()

    def wake(self) -> None:
        self._wake.set()

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        if self._loop_task is None:
            self._loop_task = asyncio.get_running_loop().create_task(
                self._run(), name=f"pool:{self.key}"
            )

    async def stop(self, why: str = "was deleted") -> None:
        """The pool is gone (or the operator stops): end the loop, fail waiting builds."""
        self._stopped = True
        for waiter in self._waiters:
            if not waiter.future.done():
                waiter.future.set_exception(PoolGone(f"pool {self.key} {why}"))
        self._waiters.clear()
        for record in self.records.values():
            if record.lease is not None:
                record.lease.mark_lost(f"pool {self.key} {why}")
        tasks = [t for t in (self._loop_task, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._publisher.close()

    async def _run(self) -> None:
        while not self._stopped:
            pause = self._passes.remaining()
            if pause > 0:
                # Backing off after a failed pass: wake-ups meanwhile wait (the event stays set).
                await asyncio.sleep(pause)
            self._wake.clear()
            try:
                next_at = await self._reconcile()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                report = self._passes.failed(ApiFailure.of(error))
                if report is not None:
                    # The first report carries the traceback: this may be a bug of ours.
                    self._report_failure(
                        "reconciling the pool", self._passes, report, exc_info=report.first
                    )
                next_at = timestamps.now()  # the loop's next turn waits for the back-off
            else:
                self._recovered("reconciling the pool", self._passes)
            timeout = None if next_at is None else (next_at - timestamps.now()).total_seconds()
            if timeout is not None and timeout <= 0:
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

    # --- leasing -------------------------------------------------------------------------

    async def acquire(
        self,
        build_key: str,
        *,
        timeout: float,  # noqa: ASYNC109
        prefer: Callable[[], str | None] | None = None,
    ) -> AgentLease:
        """Wait (FIFO) for a started idle agent and lease it to `build_key`; `prefer` names
        the agent the build ran on before, kept for it while alive (`assignment`)."""
        loop = asyncio.get_running_loop()
        waiter = _Waiter(build_key, timestamps.now(), loop.create_future(), prefer)
        self._waiters.append(waiter)
        self.wake()
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.shield(waiter.future)
        except TimeoutError:
            if waiter.future.done() and not waiter.future.cancelled():
                return waiter.future.result()  # granted in the same instant
            waiter.future.cancel()
            self._drop_waiter(waiter)
            raise LeaseTimeout(self._lease_timeout_message(build_key, timeout)) from None
        except asyncio.CancelledError:
            if waiter.future.done() and not waiter.future.cancelled():
                if waiter.future.exception() is None:
                    self.release(waiter.future.result())
            else:
                waiter.future.cancel()
            self._drop_waiter(waiter)
            raise

    def release(self, lease: AgentLease, *, delete: bool = False) -> None:
        """The build is done with its agent; ephemeral pools (or `delete`) remove it."""
        if lease.released:
            return
        lease.released = True
        record = self.records.get(lease.pod_name)
        if record is None or record.lease is not lease:
            return
        now = timestamps.now()
        record.lease = None
        record.builds_run += 1
        record.idle_since = now
        record.proven = True
        ephemeral = self.spec is not None and self.spec.ephemeral
        if (delete or ephemeral) and record.deleting is None:
            reason = scaling.DeletionReason.EPHEMERAL
            why = "ephemeral agent finished its build" if ephemeral else "released for deletion"
            self._start_deletion(record, scaling.Deletion(record.name, reason, why))
        self.wake()

    def waiting_builds(self) -> int:
        return sum(1 for w in self._waiters if not w.future.done())

    def _drop_waiter(self, waiter: _Waiter) -> None:
        with contextlib.suppress(ValueError):
            self._waiters.remove(waiter)
        self.wake()

    def _lease_timeout_message(self, build_key: str, timeout: float) -> str:
        counts = scaling.count_agents(self._agents(timestamps.now()))
        text = (
            f"no agent of pool {self.key} became free for build {build_key} within "
            f"{timeout:g}s: {counts.idle} idle, {counts.busy} busy, {counts.starting} starting"
        )
        if self.spec is not None:
            text += f", maxAgents {self.spec.max_agents}"
        if self.spec_error is not None:
            text += f"; the pool's spec is invalid: {self.spec_error}"
        elif self._creates.failing and self._creates.last is not None:
            text += f"; agent pods cannot be created: {self._creates.last.message}"
        elif self.failure_streak:
            text += f"; agent launches are failing: {self._last_failure}"
        return text

    def _assign(self) -> None:
        spec = self.spec
        if spec is None:
            return
        waiters = [w for w in self._waiters if not w.future.done()]
        self._waiters = collections.deque(waiters)
        if not waiters:
            return
        candidates = [c for r in self.records.values() if (c := self._candidate(r, spec))]
        requests = [
            assignment.Request(w.build_key, w.prefer() if w.prefer is not None else None)
            for w in waiters
        ]
        for index, name in assignment.assign(requests, candidates).items():
            waiter, record = waiters[index], self.records[name]
            lease = AgentLease(
                pool_key=self.key,
                build_key=waiter.build_key,
                namespace=self.namespace,
                pod_name=record.name,
                container=spec.agent_container,
                spec=spec,
                quota=self.quota,
            )
            record.lease = lease
            waiter.future.set_result(lease)
            self._waiters.remove(waiter)

    def _candidate(self, record: AgentRecord, spec: AgentPoolSpec) -> assignment.Candidate | None:
        if record.status is None:
            return None
        alive = (
            record.status.state in (AgentState.READY, AgentState.STARTING)
            and record.lease is None
            and record.deleting is None
            and record.name in self.view
        )
        return assignment.Candidate(
            name=record.name,
            free=alive
            and record.status.state is AgentState.READY
            # An ephemeral agent serves one build.
            and not (spec.ephemeral and record.builds_run > 0),
            claimable=alive,
            current=self._hash_of(record.name) == self.template_hash,
        )

    # --- the reconcile pass --------------------------------------------------------------

    async def _reconcile(self) -> datetime | None:
        now = timestamps.now()
        if self.spec is None:
            self._report_invalid(now)
            return None
        due = self._synced_at is None or now - self._synced_at >= timedelta(
            seconds=self._settings.resync_interval
        )
        if due and not self._lists.remaining():
            try:
                await self._sync()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                report = self._lists.failed(ApiFailure.of(error))
                if report is not None:
                    self._report_failure("listing agent pods", self._lists, report)
            else:
                self._recovered("listing agent pods", self._lists)
            now = timestamps.now()
        if self._synced_at is None:
            # Without a first list, agents of an earlier operator may be missing from the
            # view: planning now could create their duplicates.
            return now + timedelta(seconds=self._lists.remaining())
        self._classify(now)
        self._assign()
        agents = self._agents(now)
        plan = scaling.plan(self._snapshot(agents, now), now)
        for deletion in plan.deletions:
            self._start_deletion(self.records[deletion.name], deletion)
        for _ in range(plan.create):
            self._start_creation(plan.create_reason)
        agents = self._agents(now)
        api_status = self._api_connections()
        self._publish(agents, api_status, plan, now)
        return self._next_wake(plan, api_status, now)

    async def _sync(self) -> None:
        """List the pool's pods: the view after a start, a restart, or a missed deletion."""
        started = timestamps.now()
        selector = manifest.agent_selector(self.name)
        async with self.quota.slot("list", f"pods/{self.namespace}?{selector}"):
            pods = await kube.list_pods(self.api, self.namespace, selector)
        listed = set()
        for pod in pods:
            if manifest.is_agent_of(pod, self.body):
                listed.add(pod["metadata"]["name"])
                self.view.observe(pod, started)
        if self._synced_at is None:
            self._adopted = listed - set(self.records)
        for name in self.view.names():
            record = self.records.get(name)
            # A pod seen only after the list began may simply be newer than the list.
            if name not in listed and (record is None or record.first_seen < started):
                self.view.forget(name, started)
        self._synced_at = started

    def _classify(self, now: datetime) -> None:
        spec = self.spec
        assert spec is not None
        for pod in self.view:
            name = pod["metadata"]["name"]
            record = self.records.get(name)
            if record is None:
                record = self.records[name] = AgentRecord(name=name, first_seen=now)
            status = readiness.classify(
                pod,
                tolerate_virtual_kubelet_pending=spec.readiness.tolerate_virtual_kubelet_pending,
                agent_container=spec.agent_container,
                startup_timeout=spec.startup_timeout,
                image_pull_grace=self._settings.image_pull_grace,
                now=now,
            )
            record.status = status
            self._transition(record, pod, status, now)
        for name in [n for n in self.records if n not in self.view]:
            self._vanished(self.records.pop(name))

    def _transition(
        self,
        record: AgentRecord,
        pod: Mapping[str, Any],
        status: readiness.AgentStatus,
        now: datetime,
    ) -> None:
        # Found already started by the first list: an earlier operator counted its launch.
        adopted = record.name in self._adopted
        self._adopted.discard(record.name)
        if status.state is AgentState.READY:
            if record.ready_at is None:
                record.ready_at = now
                if record.idle_since is None:
                    record.idle_since = now
                if adopted:
                    record.proven = True  # it survived until now
                else:
                    self._launched(record, pod, status, now)
            elif not record.proven and now - record.ready_at >= timedelta(
                seconds=self._settings.stable_after
            ):
                # Only a launch proving itself ends the streak: an older healthy agent must
                # not, or a pool with one (a bad image rolled out while builds hold the old
                # agents) would create failing pods without ever backing off.
                record.proven = True
                self._launches_succeeded()
            return
        if status.state in (AgentState.FAILED, AgentState.LOST) and record.lease is not None:
            record.lease.mark_lost(f"{status.reason}: {status.message}")
        if status.state is AgentState.FAILED and not record.failure_reported:
            record.failure_reported = True
            if record.deleting is not None:
                return  # we are removing it anyway; its end is no failure
            if record.ready_at is None:
                self._metrics.agent_launches.labels(pool=self.key, result="failed").inc()
            if record.builds_run == 0 and record.lease is None:
                self._launch_failed(record.name, status.reason, status.message)
            self._event(
                WARNING,
                "AgentFailed",
                f"agent pod {record.name} failed: {status.reason}: {status.message}",
            )

    def _launched(
        self,
        record: AgentRecord,
        pod: Mapping[str, Any],
        status: readiness.AgentStatus,
        now: datetime,
    ) -> None:
        created = parse_time((pod.get("metadata") or {}).get("creationTimestamp"))
        seconds = max(0.0, (now - (created or record.first_seen)).total_seconds())
        self._metrics.agent_launches.labels(pool=self.key, result="ready").inc()
        self._metrics.agent_startup_seconds.labels(pool=self.key).observe(seconds)
        detail = ""
        if status.virtual_kubelet_pending:
            self._metrics.agent_virtual_kubelet_pending.labels(pool=self.key).inc()
            detail = " while the pod phase was still Pending (virtual kubelet)"
        self._event(NORMAL, "AgentReady", f"agent pod {record.name} started{detail}")

    def _vanished(self, record: AgentRecord) -> None:
        if record.lease is not None:
            record.lease.mark_lost("PodVanished: the agent pod no longer exists")
        if record.deleting is not None:
            return
        if record.ready_at is None and not record.failure_reported:
            self._metrics.agent_launches.labels(pool=self.key, result="lost").inc()
        self._event(
            NORMAL,
            "AgentReplaced",
            f"agent pod {record.name} was deleted from outside the operator; "
            "a replacement is created if the pool needs one",
        )

    def _launch_failed(self, name: str, reason: str, message: str) -> None:
        self.failure_streak += 1
        self._last_failure = f"{name}: {reason}: {message}"
        if self.failure_streak >= self._settings.backoff_after:
            # The hold's n-th step is the streak's (backoff_after + n - 1)-th failure.
            self._launch_hold.failed(self._last_failure)

    def _launches_succeeded(self) -> None:
        self.failure_streak, self._last_failure = 0, ""
        self._launch_hold.succeeded()

    def _launch_hold_until(self, now: datetime) -> datetime | None:
        wait = self._launch_hold.remaining()
        return now + timedelta(seconds=wait) if wait > 0 else None

    def _creations_held_until(self, now: datetime) -> datetime | None:
        """The end of the hold on creations: launch failures' or failed creations' back-off."""
        wait = max(self._launch_hold.remaining(), self._creates.remaining())
        return now + timedelta(seconds=wait) if wait > 0 else None

    def _agents(self, now: datetime) -> list[scaling.Agent]:
        agents = []
        for name, record in self.records.items():
            pod = self.view.get(name)
            if pod is None or record.status is None:
                continue
            meta = pod.get("metadata") or {}
            state = record.status.state
            deleting = bool(meta.get("deletionTimestamp"))
            if record.deleting is not None:
                # On its way out: neither capacity nor a candidate for another deletion.
                state, deleting = AgentState.LOST, True
            agents.append(
                scaling.Agent(
                    name=name,
                    state=state,
                    created=parse_time(meta.get("creationTimestamp")) or record.first_seen,
                    busy=record.busy,
                    idle_since=record.idle_since,
                    template_hash=(meta.get("labels") or {}).get(manifest.TEMPLATE_HASH_LABEL),
                    builds_run=record.builds_run,
                    deleting=deleting,
                    reason=record.status.reason,
                    message=record.status.message,
                )
            )
        return agents

    def _snapshot(self, agents: list[scaling.Agent], now: datetime) -> scaling.PoolSnapshot:
        spec = self.spec
        assert spec is not None
        delete_wait = self._deletes.remaining()
        return scaling.PoolSnapshot(
            min_idle=spec.min_idle,
            max_agents=spec.max_agents,
            idle_timeout=spec.idle_timeout,
            ephemeral=spec.ephemeral,
            template_hash=self.template_hash,
            agents=tuple(agents),
            waiting_builds=self.waiting_builds(),
            pending_creations=self.pending_creations,
            hold_creations_until=self._creations_held_until(now),
            hold_deletions_until=now + timedelta(seconds=delete_wait) if delete_wait else None,
            # Half the quota: exec sessions and status writes keep room while a big pool
            # fills up, and a pool asking for thousands of agents stays a trickle. While
            # creations fail, one at a time probes the API server until one succeeds.
            creation_burst=1 if self._creates.failing else max(1, self.quota.limit // 2),
        )

    def _hash_of(self, name: str) -> str | None:
        pod = self.view.get(name) or {}
        labels = (pod.get("metadata") or {}).get("labels") or {}
        value = labels.get(manifest.TEMPLATE_HASH_LABEL)
        return value if isinstance(value, str) else None

    # --- carrying out the plan -----------------------------------------------------------

    def _spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _start_creation(self, why: str) -> None:
        self.pending_creations += 1
        self._spawn(self._create(why), f"create:{self.key}")

    def _start_deletion(self, record: AgentRecord, deletion: scaling.Deletion) -> None:
        record.deleting = deletion.reason
        self._spawn(self._delete(record, deletion), f"delete:{self.key}/{record.name}")

    async def _create(self, why: str) -> None:
        try:
            pod_manifest = manifest.build_agent_pod(self.body, template_hash=self.template_hash)
            async with self.quota.slot("create", f"pods/{self.namespace}"):
                pod = await kube.create_pod(self.api, self.namespace, pod_manifest)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            failure = ApiFailure.of(error)
            if failure.retryable:
                # The API server's trouble, not the template's: back off, no AgentFailed.
                report = self._creates.failed(failure)
                if report is not None:
                    event = "AgentCreateThrottled" if failure.throttled else "AgentCreateFailed"
                    self._report_failure("creating agent pods", self._creates, report, event)
            else:
                assert isinstance(error, ApiException)
                message = api_message(error)
                self._metrics.agent_launches.labels(pool=self.key, result="rejected").inc()
                self._launch_failed("(new agent)", "CreateRejected", message)
                self._event(
                    WARNING, "AgentFailed", f"the API server rejected a new agent pod: {message}"
                )
        else:
            self._recovered("creating agent pods", self._creates)
            name = pod["metadata"]["name"]
            self.view.observe(pod, timestamps.now())
            self._event(NORMAL, "AgentLaunched", f"created agent pod {name}: {why}")
        finally:
            self.pending_creations -= 1
            self.wake()

    async def _delete(self, record: AgentRecord, deletion: scaling.Deletion) -> None:
        try:
            async with self.quota.slot("delete", f"pods/{self.namespace}/{record.name}"):
                await kube.delete_pod(self.api, self.namespace, record.name)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            report = self._deletes.failed(ApiFailure.of(error))
            if report is not None:
                self._report_failure("deleting agent pods", self._deletes, report)
            record.deleting = None  # planned again once the back-off allows deletions
        else:
            self._recovered("deleting agent pods", self._deletes)
            kind = "AgentReplaced" if deletion.reason in _REPLACING else "AgentRemoved"
            self._event(
                NORMAL,
                kind,
                f"deleted agent pod {record.name}: {deletion.reason}: {deletion.message}",
            )
        finally:
            self.wake()

    # --- reporting -----------------------------------------------------------------------

    def _report_failure(
        self,
        what: str,
        series: FailureSeries,
        report: Report,
        event: str | None = None,
        *,
        exc_info: bool = False,
    ) -> None:
        """Tell humans of a failure `series` (rate-limited by `FailureSeries.failed`)."""
        failure = series.last
        assert failure is not None
        wait = series.remaining()
        if report.first:
            text = f"{what} failed: {failure.message}; retrying with back-off"
            _log.warning(
                "pool %s: %s, next attempt in %.1fs", self.key, text, wait, exc_info=exc_info
            )
        else:
            text = (
                f"{what} failed {report.count} more time(s) "
                f"({series.failures} in a row); last: {failure.message}"
            )
            _log.warning("pool %s: %s; still retrying, next attempt in %.1fs", self.key, text, wait)
        if event is not None:
            self._event(WARNING, event, text)

    def _status_write_failed(self, error: BaseException) -> float:
        report = self._status_writes.failed(ApiFailure.of(error))
        if report is not None:
            self._report_failure("writing the pool's status", self._status_writes, report)
        return self._status_writes.remaining()

    def _recovered(self, what: str, series: FailureSeries) -> None:
        failures = series.succeeded()
        if failures:
            _log.info("pool %s: %s works again after %d failure(s)", self.key, what, failures)

    def _event(self, type_: str, reason: str, message: str) -> None:
        self._events.record(ObjectRef.of(self.body), type_, reason, message, quota=self.quota)

    def _api_connections(self) -> ApiConnectionsStatus:
        # Our own status write would otherwise show up in the status it writes.
        own = sum(
            1 for c in self.quota.running() if c.kind == "patch" and c.target == self.status_target
        )
        return ApiConnectionsStatus(
            running=max(0, self.quota.running_count - own),
            queued=self.quota.queued_count,
            limit=self.quota.limit,
        )

    def _publish(
        self,
        agents: list[scaling.Agent],
        api_status: ApiConnectionsStatus,
        plan: scaling.ScalingPlan,
        now: datetime,
    ) -> None:
        spec = self.spec
        assert spec is not None
        counts = scaling.count_agents(agents)
        for state in _AGENT_STATES:
            self._metrics.agents.labels(pool=self.key, state=state).set(getattr(counts, state))
        problems: list[tuple[str, str]] = []
        failures = launch_failures(
            self.failure_streak, self._last_failure, self._launch_hold_until(now), now
        )
        if failures is not None:
            problems.append(failures)
        problems.extend(self._problems())
        conditions = scaling.pool_conditions(
            agents,
            min_idle=spec.min_idle,
            max_agents=spec.max_agents,
            problems=problems,
            creation_failure=self._creation_failure(plan, now),
            observed_generation=self.generation,
        )
        status = {
            "agents": counts.to_body(),
            "steps": self._step_counts().to_body(),
            "apiConnections": api_status.to_body(),
        }
        self._submit(status, conditions, now)

    def _creation_failure(self, plan: scaling.ScalingPlan, now: datetime) -> tuple[str, str] | None:
        """The creation problem, while creations fail and the pool still wants agents."""
        last = self._creates.last
        if last is None or not (plan.create or plan.held or self.pending_creations):
            return None
        wait = self._creates.remaining()
        return creation_failures(
            self._creates.failures,
            last.message,
            throttled=last.throttled,
            next_attempt=now + timedelta(seconds=wait) if wait > 0 else None,
            now=now,
        )

    def _report_invalid(self, now: datetime) -> None:
        error = self.spec_error
        assert error is not None
        if self._invalid_reported != self.generation:
            self._invalid_reported = self.generation
            _log.warning("pool %s has an invalid spec: %s", self.key, error)
            self._event(WARNING, "InvalidSpec", f"the pool cannot run: {error}")
        conditions = scaling.pool_conditions(
            [],
            min_idle=0,
            max_agents=1,
            spec_errors=[str(error)],
            observed_generation=self.generation,
        )
        self._submit({"apiConnections": self._api_connections().to_body()}, conditions, now)

    async def _write_status(self, status: dict[str, Any]) -> None:
        async with self.quota.slot("patch", self.status_target):
            await kube.patch_status(self.api, kube.AGENTPOOLS, self.namespace, self.name, status)

    def _submit(
        self, status: dict[str, Any], conditions: tuple[Condition, ...], now: datetime
    ) -> None:
        latest = self._publisher.latest or self.body.get("status") or {}
        self._publisher.submit(with_conditions(status, conditions, latest, self.generation, now))

    def _next_wake(
        self, plan: scaling.ScalingPlan, api_status: ApiConnectionsStatus, now: datetime
    ) -> datetime | None:
        spec = self.spec
        assert spec is not None
        s = self._settings
        soon = now + timedelta(milliseconds=10)
        moments: list[datetime | None] = [plan.next_review]
        if self._synced_at is not None:
            resync = self._synced_at + timedelta(seconds=s.resync_interval)
            moments.append(max(resync, now + timedelta(seconds=self._lists.remaining())))
        if api_status.running or api_status.queued:
            moments.append(now + timedelta(seconds=s.connections_refresh))
        for name, record in self.records.items():
            status = record.status
            if status is None:
                continue
            if status.state is AgentState.STARTING:
                pod = self.view.get(name) or {}
                created = parse_time((pod.get("metadata") or {}).get("creationTimestamp"))
                base = created or record.first_seen
                moments.append(base + timedelta(seconds=spec.startup_timeout, milliseconds=10))
                if status.reason in readiness.PULL_WAITING_REASONS:
                    started = parse_time((pod.get("status") or {}).get("startTime")) or base
                    grace = timedelta(seconds=s.image_pull_grace, milliseconds=10)
                    moments.append(started + grace)
            if status.reason == "NodeUnreachable":
                moments.append(now + timedelta(seconds=5))
            if (
                status.state is AgentState.READY
                and not record.proven
                and record.ready_at is not None
                and self.failure_streak
            ):
                moments.append(record.ready_at + timedelta(seconds=s.stable_after))
        upcoming = _earliest(*moments)
        return None if upcoming is None else max(upcoming, soon)

    def describe(self) -> dict[str, Any]:
        """Agents by state, for /debug/connections."""
        counts = scaling.count_agents(self._agents(timestamps.now())) if self.spec else None
        return {
            "pool": self.key,
            "agents": counts.to_body() if counts else None,
            "waitingBuilds": self.waiting_builds(),
            "pendingCreations": self.pending_creations,
            "specError": str(self.spec_error) if self.spec_error else None,
        }
