"""Bounded polling for integration tests (imported by the shared conftest and test helpers).

Used for states that live in another process's view (the API server's objects), for which
the test has no event to await.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(
    check: Callable[[], Awaitable[T | None] | T | None],
    within: float = 15.0,
    message: str = "condition",
    interval: float = 0.05,
) -> T:
    """Poll `check` (plain or async) until it returns a truthy value (returned), failing
    after `within` s."""
    last: T | None = None
    try:
        async with asyncio.timeout(within):
            while True:
                result = check()
                last = await result if inspect.isawaitable(result) else result
                if last:
                    return last
                await asyncio.sleep(interval)
    except TimeoutError:
        raise AssertionError(
            f"timed out after {within:g}s waiting for {message}; last: {last!r}"
        ) from None
