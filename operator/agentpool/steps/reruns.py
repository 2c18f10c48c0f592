"""What a build does when an agent it ran on is lost (pure): re-run it, retry one step, or fail.

A build's steps share a workspace on the agent they run on: what a checkout wrote, a compile
reads. When that agent is lost (its pod gone or terminal) while a step of the build runs, the
workspace goes with it, so the step must never go on on a new agent as if the workspace were
there. `plan` decides, from the build's finished steps (where each ran, how it ended, whether
it still exists) and the agents the build lost. Rules, in the order they apply:

0. Steps of the build ran on the lost agent before its runner knew them (listed after an
   operator restart, or run before the build went idle and came back): they cannot be run
   again, and the workspace they made is gone: `FAIL`.
1. Nothing of the build ran on a lost agent (the step is the build's first there): nothing of
   the workspace is missing, so the step alone follows the ordinary retry rules
   (`should_retry`): `STEP_ONLY`.
2. The build had stopped (a step of it failed or was cancelled and still exists): the step
   runs only because of its `runPolicy: Always`; the build is not run again: `FAIL`.
3. The lost step has no retries left (`should_retry` on its own attempts and `spec.retries`):
   `FAIL`, and the build's later `OnSuccess` steps are skipped.
4. Every step that ran on a lost agent was deleted since: nothing is left to rebuild the
   workspace from: `FAIL`.
5. Otherwise `RERUN`: the build runs again from its first step on a new agent. Every step that
   `Succeeded` on a lost agent and still exists runs again, in the build's order, then the
   lost step, then the rest of the build. The re-run is the lost step's retry: its own
   `spec.retries` governs it, and it counts as its next attempt. The earlier steps run again
   whatever their own `spec.retries` (they did not fail; the build needs their work again),
   each as a new attempt of its own.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from agentpool.model import StepPhase
from agentpool.steps.scheduling import QueuedStep

__all__ = [
    "RERUN_AFTER_AGENT_LOST",
    "AgentLoss",
    "RanStep",
    "Rerun",
    "failed_message",
    "plan",
    "rerun_message",
]

# The reason of a re-run step's pending status and of its Event.
RERUN_AFTER_AGENT_LOST = "RerunAfterAgentLost"


@dataclass(frozen=True)
class RanStep:
    """A finished step of the build: the agent it ran on (its workspace), how it ended, and
    whether it was deleted since (a deleted step cannot run again)."""

    step: QueuedStep
    agent: str
    phase: StepPhase
    deleted: bool = False


class AgentLoss(enum.Enum):
    STEP_ONLY = "StepOnly"  # rule 1: the ordinary retry rules apply to the step alone
    FAIL = "Fail"  # rules 2-4: the step fails AgentLost, its build's workspace is gone
    RERUN = "Rerun"  # rule 5


@dataclass(frozen=True)
class Rerun:
    """What happens to a build whose agent was lost under one of its steps."""

    verdict: AgentLoss
    # Finished steps whose work went with the lost agents, in the build's order.
    lost_with: tuple[RanStep, ...] = ()
    # RERUN: the steps that run again before the lost step, in the build's order.
    again: tuple[QueuedStep, ...] = ()
    why: str = ""  # FAIL: why the build is not re-run (the rule's words)


def plan(
    ran: Iterable[RanStep],
    lost_agents: Collection[str],
    *,
    stopped: bool,
    retry: bool,
    ran_earlier: Collection[str] = (),
) -> Rerun:
    """Decide for a step whose agent was lost; `ran`: the build's finished steps,
    `lost_agents`: every agent the build lost (the step's included), `stopped`: the build
    failed or was cancelled, `retry`: the lost step's own retries allow another attempt,
    `ran_earlier`: agents that steps of the build unknown to `ran` ran on."""
    in_order = sorted(ran, key=lambda r: r.step.sort_key)
    lost_with = tuple(r for r in in_order if r.agent in lost_agents)
    if any(agent in ran_earlier for agent in lost_agents):
        why = (
            "earlier steps of the build ran there before an operator restart or before the "
            "build went idle, so they cannot be run again"
        )
        return Rerun(AgentLoss.FAIL, lost_with, why=why)
    if not lost_with:
        return Rerun(AgentLoss.STEP_ONLY)
    if stopped:
        why = "the build had already failed or been cancelled"
        return Rerun(AgentLoss.FAIL, lost_with, why=why)
    if not retry:
        why = "the step has no retries left (spec.retries)"
        return Rerun(AgentLoss.FAIL, lost_with, why=why)
    again = tuple(r.step for r in lost_with if r.phase is StepPhase.SUCCEEDED and not r.deleted)
    if not again:
        why = "the steps that ran there were deleted, so the build cannot be re-run from them"
        return Rerun(AgentLoss.FAIL, lost_with, why=why)
    return Rerun(AgentLoss.RERUN, lost_with, again)


def failed_message(loss: Rerun, failure: str, build: str) -> str:
    """The status message of a step failed by rules 2-4: what happened and what to do."""
    names = ", ".join(r.step.name for r in loss.lost_with)
    steps = f"step(s) {names}" if names else "earlier steps"
    return (
        f"{failure}; {steps} of build {build} ran there and the build's workspace "
        f"is gone, so the step is not continued elsewhere and the build is not re-run: "
        f"{loss.why}. Re-run the build (agentpool build rerun {build}), or give the step "
        "spec.retries so that a lost agent re-runs the build from its first step"
    )


def rerun_message(agent: str, lost_step: str, first: str, build: str) -> str:
    """The pending status message and Event of every step of a re-run build."""
    return (
        f"agent {agent} was lost with build {build}'s workspace while step {lost_step} ran; "
        f"the build runs again from step {first} on a new agent"
    )
