"""Simulated kubelet: schedules pods and drives their status through data-driven profiles.

Placeholder: filled in by the kubelet/exec work. `install` is the contract with cluster.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from agentpool.sandbox.cluster import Sandbox


def install(app: web.Application, sandbox: Sandbox) -> None:
    """Add exec/log routes and start/stop hooks for the simulated kubelet."""
