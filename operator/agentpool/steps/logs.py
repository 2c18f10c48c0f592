"""A step's whole output, read from the file its keeper wrote in the agent container.

`agentpool logs STEP` uses this: the operator keeps only a bounded `status.logTail`, while the
container keeps everything the step printed (stdout and stderr merged, in write order).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kubernetes_asyncio.client import ApiClient

from agentpool.kube import client as kube
from agentpool.kube.exec import ExecApiClient, open_exec
from agentpool.kube.quota import ApiQuota
from agentpool.model import AgentPoolSpec, BuildStepSpec, StepPhase

__all__ = ["LogUnavailable", "log_command", "read_step_log"]

# The state directory as the session driver resolves it (the container's own variable, then
# the operator's setting, then the default); the step id comes in as $0 and the setting as $1,
# so that nothing is interpolated into the command text.
_CAT = 'exec cat -- "${AGENTPOOL_STATE_DIR:-${1:-${TMPDIR:-/tmp}/.agentpool}}/$0/out"'


class LogUnavailable(Exception):
    """The step has no output to read (never started, or its agent is gone)."""


def log_command(step_id: str, state_dir: str | None = None) -> list[str]:
    return ["/bin/sh", "-c", _CAT, step_id, state_dir or ""]


def step_dir_id(body: dict[str, Any]) -> str:
    """The step's directory in the container (see `StepRun.step_id`)."""
    uid = str((body.get("metadata") or {}).get("uid", ""))
    attempts = (body.get("status") or {}).get("attempts")
    return f"{uid}.{attempts if isinstance(attempts, int) and attempts > 0 else 1}"


async def read_step_log(
    api: ApiClient,
    exec_api: ExecApiClient,
    namespace: str,
    name: str,
    write: Callable[[bytes], object],
    *,
    quota: ApiQuota | None = None,
    state_dir: str | None = None,
) -> int:
    """Stream the whole output of BuildStep `namespace/name` to `write`; return its size.

    Runs `cat` of the step's output file in its agent (through the pool's quota when given).
    """
    body = await kube.get_object(api, kube.BUILDSTEPS, namespace, name)
    status = body.get("status") or {}
    agent = status.get("agent")
    phase = status.get("phase")
    if not isinstance(agent, str) or not agent:
        raise LogUnavailable(
            f"BuildStep {namespace}/{name} has not run on an agent (phase {phase or 'Pending'})"
        )
    spec = BuildStepSpec.from_body(body.get("spec") or {}, name=name)
    container = spec.container
    if container is None:
        pool = await kube.get_object(api, kube.AGENTPOOLS, namespace, spec.pool)
        container = AgentPoolSpec.from_body(pool.get("spec") or {}).agent_container
    command = log_command(step_dir_id(body), state_dir)
    total = 0
    if quota is not None:
        # A read that ends by itself: a short request, not a session holding a build's slot.
        connection = await quota.acquire("log", f"{namespace}/{agent}/{container}")
    try:
        session = await open_exec(exec_api, namespace, agent, container, command, stdin=False)
        async with session:
            while (item := await session.read()) is not None:
                channel, data = item
                if channel == 1:
                    total += len(data)
                    write(data)
            result = await session.result()
    finally:
        if quota is not None:
            quota.release(connection)
    if result.exit_code != 0 and total == 0:
        raise LogUnavailable(
            f"the output of BuildStep {namespace}/{name} is no longer on agent {agent} "
            f"(phase {phase or StepPhase.PENDING.value})"
        )
    return total
