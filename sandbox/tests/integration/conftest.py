"""Fixtures of the sandbox's integration tests (each module starts the sandbox it needs)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from agentpool_sandbox.testing import eventually


@pytest.fixture
def until() -> Callable[..., Awaitable[Any]]:
    return eventually
