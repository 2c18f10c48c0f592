"""Waiting on several things at once, for the build runner."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any

from agentpool.kube.quota import ApiQuota

__all__ = ["after", "first_done"]


async def after(moment: float, quota: ApiQuota) -> None:
    """Once others wait for the quota, but not before `moment` (loop time)."""
    delay = moment - asyncio.get_running_loop().time()
    if delay > 0:
        await asyncio.sleep(delay)
    # Created only now: a coroutine made up front would leak un-awaited when cancelled early.
    await quota.wait_for_waiters()


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
