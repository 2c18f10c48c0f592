"""Which waiting build gets which agent (pure).

Builds wait for an agent in FIFO order. A build may name the agent it *prefers*: the one its
earlier steps ran on. Its workspace is there, and after an operator restart a step of it may
still be running there, so a build keeps its agent whenever that agent is alive:

- a build whose preferred agent is free gets it;
- a build whose preferred agent is alive and not leased to another build (not started yet,
  or not classified yet after a restart) waits for it, and nobody else takes it meanwhile;
- any other build (no preference, or its agent is gone, failing, being deleted or held by
  another build) gets the best free agent no waiting build prefers: one stamped from the
  current template first, then by name.

A waiting build never holds up the builds behind it: each takes what is left for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Candidate", "Request", "assign"]


@dataclass(frozen=True)
class Candidate:
    """One agent of the pool, as far as leasing goes."""

    name: str
    free: bool  # started, not leased, not being deleted: a build may take it now
    claimable: bool  # alive and not leased: a build that prefers it may wait for it
    current: bool = True  # stamped from the pool's current template


@dataclass(frozen=True)
class Request:
    """One waiting build."""

    build: str
    prefer: str | None = None


def assign(requests: Sequence[Request], agents: Sequence[Candidate]) -> dict[int, str]:
    """Agent name by index of the request that gets it now; requests left out wait."""
    by_name = {agent.name: agent for agent in agents}
    granted: dict[int, str] = {}
    # First every build claims the agent it prefers, if alive and nobody earlier claimed it.
    claimed: dict[str, int] = {}
    for index, request in enumerate(requests):
        wanted = by_name.get(request.prefer) if request.prefer else None
        if wanted is None or not (wanted.free or wanted.claimable) or wanted.name in claimed:
            continue
        claimed[wanted.name] = index
        if wanted.free:
            granted[index] = wanted.name
    # Then the others, in order, take free agents nobody claimed.
    spare = sorted(
        (a for a in agents if a.free and a.name not in claimed),
        key=lambda a: (not a.current, a.name),
    )
    claimers = set(claimed.values())
    for index in range(len(requests)):
        if index not in claimers and spare:
            granted[index] = spare.pop(0).name
    return dict(sorted(granted.items()))
