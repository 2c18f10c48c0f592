"""Waiting on several things at once, for the build runner."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from agentpool.kube.quota import ApiQuota

__all__ = ["first_done", "until_quota"]


async def until_quota(
    quota: ApiQuota, wanted: Callable[[float], bool], moments: Sequence[float] = ()
) -> None:
    """Return once `wanted(now)` holds (loop time); checked at every change of the quota's
    state and at each of `moments`, when a time-based part of it may turn true."""
    loop = asyncio.get_running_loop()
    while not wanted(now := loop.time()):
        upcoming = [moment - now for moment in moments if moment > now]
        await quota.changed(within=min(upcoming) if upcoming else None)


async def first_done(
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
