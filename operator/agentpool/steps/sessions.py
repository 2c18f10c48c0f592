"""The exec sessions of one build: per-container bookkeeping of open sessions and their slots.

A session holds one slot of the pool's quota while open; closing or dropping it gives the slot
back and records the session's metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any

from agentpool.kube.exec import open_exec
from agentpool.kube.quota import ApiQuota, Connection
from agentpool.steps import handover
from agentpool.steps.context import RunnerContext
from agentpool.steps.handover import QuotaState
from agentpool.steps.protocol import BOOTSTRAP_COMMAND
from agentpool.steps.session import Session

__all__ = ["CLOSE_TIMEOUT", "SESSION_READY_TIMEOUT", "OpenSession", "Sessions"]

SESSION_READY_TIMEOUT = 30.0
CLOSE_TIMEOUT = 5.0


class OpenSession:
    """An exec session into one container, with the quota slot it holds."""

    def __init__(self, session: Session, slot: Connection, quota: ApiQuota, pool: str) -> None:
        self.session = session
        self.slot = slot
        self.quota = quota
        self.pool = pool
        self.steps = 0
        self.opened_at = asyncio.get_running_loop().time()


async def _released_when_idle(quota: ApiQuota) -> None:
    await quota.wait_until(lambda: handover.release_when_idle(QuotaState.of(quota)))


class Sessions:
    """A build's open exec sessions, one per (pod, container), each holding a quota slot."""

    def __init__(self, ctx: RunnerContext, pool: str) -> None:
        self.ctx = ctx
        self.pool = pool
        self._open: dict[tuple[str, str], OpenSession] = {}

    def __bool__(self) -> bool:
        return bool(self._open)

    def current(self, pod: str, container: str) -> OpenSession | None:
        """The session open into `container` of `pod`, if any."""
        opened = self._open.get((pod, container))
        return opened if opened is not None and opened.session.open else None

    def handover_waits(self) -> list[Coroutine[Any, Any, None]]:
        """One wait per open session until its slot is wanted elsewhere: builds wait for a
        session, or requests starve (`handover.release_when_idle`)."""
        return [_released_when_idle(s.quota) for s in self._open.values()]

    async def open(
        self, namespace: str, pod: str, container: str, quota: ApiQuota, *, resuming: bool = False
    ) -> OpenSession:
        """The open session into `container`, reused until `sessions.maxSteps`, else a new one
        holding a session slot of `quota` (`resuming`: a build collecting a detached step,
        which keeps its place ahead of builds that have not started)."""
        key = (pod, container)
        current = self._open.get(key)
        if current is not None and current.session.open:
            spec = self.ctx.agents.pool_spec(self.pool)
            if spec is None or current.steps < spec.sessions.max_steps:
                return current
        if current is not None:
            await self.close(pod, container)
        target = f"{namespace}/{pod}/{container}"
        slot = await quota.acquire_session(target, resuming=resuming)
        try:
            stream = await self._stream(namespace, pod, container)
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
        opened = OpenSession(session, slot, quota, self.pool)
        self._open[key] = opened
        return opened

    async def _stream(self, namespace: str, pod: str, container: str) -> Any:
        if self.ctx.open_stream is not None:
            return await self.ctx.open_stream(namespace, pod, container)
        assert self.ctx.exec_api is not None
        return await open_exec(self.ctx.exec_api, namespace, pod, container, BOOTSTRAP_COMMAND)

    async def close(self, pod: str, container: str) -> None:
        """Close the session cleanly (an abort when that fails) and give its slot back."""
        opened = self._open.pop((pod, container), None)
        if opened is None:
            return
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await opened.session.close()
        except (TimeoutError, Exception):
            await opened.session.abort()
        finally:
            self._closed(opened)

    async def drop(self, pod: str, container: str) -> None:
        """Abort the stream (a running step goes on in its container) and give its slot back."""
        opened = self._open.pop((pod, container), None)
        if opened is None:
            return
        try:
            await opened.session.abort()
        finally:
            self._closed(opened)

    def _closed(self, opened: OpenSession) -> None:
        opened.quota.release(opened.slot)
        self.ctx.metrics.exec_sessions_open.labels(pool=self.pool).dec()
        self.ctx.metrics.session_steps.labels(pool=self.pool).observe(opened.steps)

    async def close_all(self) -> None:
        for pod, container in list(self._open):
            await self.close(pod, container)

    async def drop_all(self) -> None:
        for pod, container in list(self._open):
            await self.drop(pod, container)
