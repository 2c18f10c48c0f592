"""Where a build works on an agent (pure): one directory per build and agent.

On a non-ephemeral agent, builds follow one another. With `spec.workspace.isolation:
PerBuild` (the default) each build's steps run in `<state>/.ws/<agent>/<build>` in the
agent container: `work` in it is their working directory, `tmp` their TMPDIR. Before a
build's first step on an agent the runner removes every other workspace of that agent: a
build's workspace stays while no other build has used the agent, because its later steps go
back there. The agent level keeps agents apart when containers share one state dir (the
sandbox's do).
"""

from __future__ import annotations

import hashlib
import re

from agentpool.steps.protocol import STEP_ID

__all__ = ["for_agent", "for_build", "workspace"]

_UNSAFE = re.compile(r"[^a-z0-9.-]+")
_SLUG = 40  # readable part; the digest keeps names apart


def _name(readable: str, identity: str) -> str:
    slug = _UNSAFE.sub("-", readable.lower()).strip(".-")[:_SLUG].strip(".-") or "build"
    return f"{slug}-{hashlib.sha256(identity.encode()).hexdigest()[:12]}"


def for_build(namespace: str, build: str) -> str:
    """The build's directory name: readable, unique per namespace and build."""
    return _name(build, f"{namespace}/{build}")


def for_agent(pod: str) -> str:
    """The agent's directory name: the pod's own name when it is a safe one."""
    return pod if STEP_ID.fullmatch(pod) and not pod.startswith(".") else _name(pod, pod)


def workspace(pod: str, namespace: str, build: str) -> str:
    """`<agent>/<build>`, as `StepRequest.workspace` takes it."""
    return f"{for_agent(pod)}/{for_build(namespace, build)}"
