"""The status publisher: writes the latest status of one pool, coalesced, only when changed.

Many pod events make few writes: a status submitted while a write is in flight (or within
the interval after it) replaces the pending one, and one that equals the written status is
dropped. A failed write is retried, carrying the latest status, after the wait its owner's
back-off gives (`failed`: the controller's tracker of status writes, which honours the
server's Retry-After and rate-limits the logging).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException

__all__ = ["FailureHook", "PoolStatusPublisher", "StatusWrite"]

_log = logging.getLogger(__name__)

# Writes one status body through the pool's quota.
StatusWrite = Callable[[dict[str, Any]], Awaitable[None]]
# Told of a failed write; returns the seconds to wait before the next one.
FailureHook = Callable[[BaseException], float]


class PoolStatusPublisher:
    """Writes the latest status of one pool, coalesced, only when it changed."""

    def __init__(
        self,
        key: str,
        write: StatusWrite,
        interval: float,
        *,
        failed: FailureHook,
        succeeded: Callable[[], None],
    ) -> None:
        self._key = key
        self._write = write
        self._interval = interval
        self._failed = failed
        self._succeeded = succeeded
        self._pending: dict[str, Any] | None = None
        self.written: dict[str, Any] | None = None
        self.writing = False
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def submit(self, status: dict[str, Any]) -> None:
        if status == self.written and self._pending is None:
            return
        self._pending = status
        self._changed.set()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"status:{self._key}"
            )

    @property
    def latest(self) -> dict[str, Any] | None:
        return self._pending if self._pending is not None else self.written

    async def _run(self) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            status, self._pending = self._pending, None
            if status is None or status == self.written:
                continue
            pause = self._interval
            try:
                self.writing = True
                await self._write(status)
                self.written = status
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if isinstance(error, ApiException) and error.status == 404:
                    return  # the pool is gone; its controller stops on the DELETED event
                self._retry(status)
                pause = max(pause, self._failed(error))
            else:
                self._succeeded()
            finally:
                self.writing = False
            # Coalescing: whatever arrives meanwhile goes out in one write.
            await asyncio.sleep(pause)

    def _retry(self, status: dict[str, Any]) -> None:
        if self._pending is None:
            self._pending = status
        self._changed.set()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
