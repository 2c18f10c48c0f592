"""Bounded polling for tests that drive the sandbox (the operator's and the sandbox's own).

Used for states that live in another process's view (the API server's objects), for which
the test has no event to await. Here rather than in a test tree because both test trees, the
operator's (tests/) and this distribution's (sandbox/tests/), use it; it needs nothing beyond
the standard library, so the package does not depend on pytest.
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
