"""Scaling decisions, agent counts and pool conditions."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from agentpool.pool.readiness import AgentState
from agentpool.pool.scaling import (
    Agent,
    DeletionReason,
    PoolSnapshot,
    ScalingPlan,
    count_agents,
    plan,
    pool_conditions,
)

NOW = datetime(2026, 11, 24, 14, 0, 0, tzinfo=UTC)
CUR, OLD = "a1b2c3d4e5", "0000000000"
S, R, F, L = AgentState.STARTING, AgentState.READY, AgentState.FAILED, AgentState.LOST


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def agent(name: str, state: AgentState = R, **kw: object) -> Agent:
    fields: dict[str, object] = {
        "created": ago(3600),
        "template_hash": CUR,
        "idle_since": ago(10) if state is R and not kw.get("busy") else None,
    }
    fields.update(kw)
    return Agent(name=name, state=state, **fields)  # type: ignore[arg-type]


def pool(*agents: Agent, **kw: object) -> PoolSnapshot:
    fields: dict[str, object] = {
        "min_idle": 0,
        "max_agents": 10,
        "idle_timeout": 600.0,
        "ephemeral": False,
        "template_hash": CUR,
    }
    fields.update(kw)
    return PoolSnapshot(agents=agents, **fields)  # type: ignore[arg-type]


def deleted(result: ScalingPlan) -> dict[str, DeletionReason]:
    return {d.name: d.reason for d in result.deletions}


# --- keeping minIdle and following demand -------------------------------------------------


def test_empty_pool_creates_min_idle() -> None:
    assert plan(pool(min_idle=2), NOW).create == 2


def test_starting_agents_count_towards_min_idle() -> None:
    assert plan(pool(agent("a", S), min_idle=2), NOW).create == 1


def test_busy_agents_do_not_count_as_idle() -> None:
    assert plan(pool(agent("a", busy=True), min_idle=1), NOW).create == 1


def test_waiting_builds_start_more_agents() -> None:
    result = plan(pool(agent("a"), min_idle=1, waiting_builds=3), NOW)
    assert result.create == 3


def test_pending_creations_are_not_created_twice() -> None:
    assert plan(pool(min_idle=2, pending_creations=2), NOW).create == 0


def test_nothing_to_do_when_demand_is_met() -> None:
    result = plan(pool(agent("a"), agent("b"), min_idle=2), NOW)
    assert (result.create, result.deletions) == (0, ())


# --- maxAgents --------------------------------------------------------------------------


def test_creations_stop_at_max_agents() -> None:
    result = plan(pool(agent("a", busy=True), agent("b", S), max_agents=3, waiting_builds=5), NOW)
    assert (result.create, result.at_capacity) == (1, True)


def test_pending_creations_count_towards_max_agents() -> None:
    result = plan(
        pool(agent("a", busy=True), max_agents=3, waiting_builds=5, pending_creations=2), NOW
    )
    assert result.create == 0


def test_creations_in_flight_are_capped_by_the_burst_and_say_so() -> None:
    result = plan(pool(min_idle=10, pending_creations=3, creation_burst=4), NOW)
    assert result.create == 1
    assert "at most 4 agent pod creations at a time" in result.create_reason


def test_min_idle_above_max_agents_is_clamped() -> None:
    assert plan(pool(min_idle=5, max_agents=2), NOW).create == 2


def test_lowered_max_agents_scales_down_starting_then_idle_never_busy() -> None:
    agents = [
        agent("busy1", busy=True),
        agent("busy2", busy=True),
        agent("idle1"),
        agent("start1", S),
    ]
    result = plan(pool(*agents, max_agents=2, idle_timeout=None), NOW)
    assert deleted(result) == {
        "start1": DeletionReason.SCALE_DOWN,
        "idle1": DeletionReason.SCALE_DOWN,
    }


def test_scale_down_cannot_touch_busy_agents_even_above_max() -> None:
    result = plan(pool(agent("a", busy=True), agent("b", busy=True), max_agents=1), NOW)
    assert (result.deletions, result.create) == ((), 0)


# --- failed and lost agents -------------------------------------------------------------


def test_failed_agent_is_deleted_and_replaced() -> None:
    failed = agent("a", F, reason="ImagePullBackOff", message="container jnlp: ImagePullBackOff")
    result = plan(pool(failed, min_idle=1), NOW)
    assert (deleted(result), result.create) == ({"a": DeletionReason.FAILED}, 1)
    assert result.deletions[0].message == (
        "agent failed: ImagePullBackOff: container jnlp: ImagePullBackOff"
    )


def test_failed_agents_do_not_block_capacity() -> None:
    result = plan(pool(agent("a", F), agent("b", F), max_agents=2, min_idle=2), NOW)
    assert result.create == 2


def test_lost_agent_is_cleaned_up_unless_already_deleting() -> None:
    result = plan(pool(agent("a", L, reason="NodeLost"), agent("b", L, deleting=True)), NOW)
    assert deleted(result) == {"a": DeletionReason.LOST_CLEANUP}


def test_busy_failed_agent_is_left_for_the_step_layer() -> None:
    assert plan(pool(agent("a", F, busy=True)), NOW).deletions == ()


# --- idle timeout -----------------------------------------------------------------------


def test_idle_agents_above_min_idle_are_reaped_after_idle_timeout() -> None:
    agents = [agent("a", idle_since=ago(700)), agent("b", idle_since=ago(900)), agent("c")]
    result = plan(pool(*agents, min_idle=1), NOW)
    assert deleted(result) == {"a": DeletionReason.IDLE_TIMEOUT, "b": DeletionReason.IDLE_TIMEOUT}


def test_min_idle_agents_are_kept_even_when_timed_out() -> None:
    agents = [agent("a", idle_since=ago(700)), agent("b", idle_since=ago(900))]
    result = plan(pool(*agents, min_idle=1), NOW)
    # The longest idle goes first.
    assert deleted(result) == {"b": DeletionReason.IDLE_TIMEOUT}


def test_no_reaping_while_builds_wait() -> None:
    agents = [agent("a", idle_since=ago(700))]
    assert plan(pool(*agents, waiting_builds=1), NOW).deletions == ()


def test_next_review_is_the_next_idle_expiry() -> None:
    result = plan(pool(agent("a", idle_since=ago(100))), NOW)
    assert result.next_review == ago(100) + timedelta(seconds=600)


def test_idle_timeout_none_never_reaps() -> None:
    result = plan(pool(agent("a", idle_since=ago(10**6)), idle_timeout=None), NOW)
    assert result.deletions == ()


# --- ephemeral --------------------------------------------------------------------------


def test_ephemeral_agent_is_deleted_after_its_build() -> None:
    agents = [agent("used", builds_run=1), agent("fresh"), agent("running", busy=True)]
    result = plan(pool(*agents, ephemeral=True, min_idle=1), NOW)
    assert (deleted(result), result.create) == ({"used": DeletionReason.EPHEMERAL}, 0)


def test_reused_agents_stay_when_not_ephemeral() -> None:
    assert plan(pool(agent("used", builds_run=3)), NOW).deletions == ()


# --- template roll ----------------------------------------------------------------------


def test_old_template_starting_agent_is_replaced_at_once() -> None:
    result = plan(pool(agent("a", S, template_hash=OLD), min_idle=1), NOW)
    assert (deleted(result), result.create) == ({"a": DeletionReason.TEMPLATE_CHANGED}, 1)


def test_roll_surges_new_agents_before_deleting_old_idle_ones() -> None:
    old = [agent("o1", template_hash=OLD), agent("o2", template_hash=OLD)]
    result = plan(pool(*old, min_idle=2), NOW)
    assert (result.deletions, result.create) == ((), 2)


def test_roll_deletes_old_idle_as_new_ones_become_ready() -> None:
    agents = [
        agent("o1", template_hash=OLD, created=ago(7200)),
        agent("o2", template_hash=OLD),
        agent("n1"),
        agent("n2", S),
    ]
    result = plan(pool(*agents, min_idle=2), NOW)
    assert (deleted(result), result.create) == ({"o1": DeletionReason.TEMPLATE_CHANGED}, 0)


def test_old_idle_agents_above_min_idle_go_at_once() -> None:
    agents = [agent(f"o{i}", template_hash=OLD) for i in range(3)]
    result = plan(pool(*agents, min_idle=0), NOW)
    assert set(deleted(result)) == {"o0", "o1", "o2"}


def test_roll_never_touches_busy_old_agents() -> None:
    result = plan(pool(agent("o", template_hash=OLD, busy=True)), NOW)
    assert result.deletions == ()


def test_roll_at_full_capacity_goes_one_at_a_time() -> None:
    old = [agent("o1", template_hash=OLD), agent("o2", template_hash=OLD)]
    first = plan(pool(*old, min_idle=2, max_agents=2), NOW)
    assert (len(first.deletions), first.create) == (1, 1)
    # The replacement is starting: wait for it rather than take another old agent.
    remaining = [a for a in old if a.name not in first.deleted_names]
    second = plan(pool(*remaining, agent("n1", S), min_idle=2, max_agents=2), NOW)
    assert (second.deletions, second.create) == ((), 0)


def test_old_idle_agents_serve_waiting_builds_instead_of_being_rolled() -> None:
    old = [agent("o1", template_hash=OLD)]
    result = plan(pool(*old, max_agents=1, waiting_builds=1), NOW)
    assert (result.deletions, result.create) == ((), 0)


# --- holding creations ------------------------------------------------------------------


def test_hold_stops_creations_and_sets_next_review() -> None:
    hold = NOW + timedelta(seconds=30)
    result = plan(pool(min_idle=2, hold_creations_until=hold), NOW)
    assert (result.create, result.next_review) == (0, hold)


# --- properties over random pools -------------------------------------------------------


def random_pool(rng: random.Random) -> PoolSnapshot:
    agents = []
    for i in range(rng.randint(0, 12)):
        state = rng.choice([S, R, R, R, F, L])
        busy = (state is R and rng.random() < 0.4) or (state is F and rng.random() < 0.1)
        agents.append(
            agent(
                f"a{i}",
                state,
                busy=busy,
                template_hash=rng.choice([CUR, CUR, OLD, None]),
                idle_since=None if busy else ago(rng.choice([0, 100, 700, 5000])),
                builds_run=rng.randint(0, 2),
                deleting=state is L and rng.random() < 0.5,
                created=ago(rng.randint(0, 10_000)),
            )
        )
    return pool(
        *agents,
        min_idle=rng.randint(0, 6),
        max_agents=rng.randint(1, 10),
        idle_timeout=rng.choice([None, 0.0, 600.0]),
        ephemeral=rng.random() < 0.3,
        waiting_builds=rng.randint(0, 8),
        pending_creations=rng.randint(0, 2),
    )


POOLS = [random_pool(random.Random(seed)) for seed in range(2000)]


def live_after(snapshot: PoolSnapshot, result: ScalingPlan) -> int:
    kept = [a for a in snapshot.agents if a.state in (S, R) and a.name not in result.deleted_names]
    return len(kept) + snapshot.pending_creations + result.create


def test_property_never_deletes_a_busy_agent() -> None:
    for snapshot in POOLS:
        busy = {a.name for a in snapshot.agents if a.busy}
        assert not busy & plan(snapshot, NOW).deleted_names, snapshot


def test_property_never_creates_beyond_max_agents() -> None:
    for snapshot in POOLS:
        result = plan(snapshot, NOW)
        before = live_after(snapshot, replace(result, create=0, deletions=()))
        after = live_after(snapshot, result)
        # Creating never pushes the pool over maxAgents (it may already be over it with
        # busy agents that cannot be removed, but then nothing is created).
        assert result.create == 0 or after <= snapshot.max_agents, snapshot
        assert after <= max(before, snapshot.max_agents), snapshot


def test_property_each_agent_is_deleted_at_most_once_and_exists() -> None:
    for snapshot in POOLS:
        names = [d.name for d in plan(snapshot, NOW).deletions]
        assert len(names) == len(set(names))
        assert set(names) <= {a.name for a in snapshot.agents}


def test_property_min_idle_started_idle_agents_are_kept() -> None:
    # Current-template idle agents are only removed when more than minIdle + waiting
    # builds are idle, or for being used (ephemeral) or above maxAgents.
    for snapshot in POOLS:
        result = plan(snapshot, NOW)
        idle_cur = [
            a
            for a in snapshot.agents
            if a.state is R
            and not a.busy
            and a.template_hash == CUR
            and not (snapshot.ephemeral and a.builds_run > 0)
        ]
        kept = [a for a in idle_cur if a.name not in result.deleted_names]
        floor = min(snapshot.min_idle, snapshot.max_agents) + snapshot.waiting_builds
        scaled_down = any(d.reason is DeletionReason.SCALE_DOWN for d in result.deletions)
        if not scaled_down:
            assert len(kept) >= min(floor, len(idle_cur)), snapshot


def test_property_plan_is_deterministic() -> None:
    for snapshot in POOLS[:200]:
        assert plan(snapshot, NOW) == plan(snapshot, NOW)


# --- counts and conditions --------------------------------------------------------------


def test_counts_by_state_for_status() -> None:
    agents = [agent("a"), agent("b", busy=True), agent("c", S), agent("d", F), agent("e", L)]
    assert count_agents(agents).to_body() == {
        "starting": 1,
        "idle": 1,
        "busy": 1,
        "failed": 1,
        "total": 4,
    }


def test_ready_when_min_idle_agents_have_started() -> None:
    ready, degraded = pool_conditions([agent("a"), agent("b", busy=True)], min_idle=2, max_agents=5)
    assert (ready.status, ready.reason) == ("True", "AgentsReady")
    assert (degraded.status, degraded.reason) == ("False", "AsExpected")


def test_not_ready_while_warm_agents_start() -> None:
    ready, _ = pool_conditions([agent("a"), agent("b", S)], min_idle=2, max_agents=5)
    assert (ready.status, ready.reason, ready.message) == (
        "False",
        "AgentsStarting",
        "1 of 2 warm agent(s) ready; 1 agent(s) ready (1 idle, 0 busy), 1 starting",
    )


def test_on_demand_pool_is_ready() -> None:
    ready, _ = pool_conditions([], min_idle=0, max_agents=5)
    assert (ready.status, ready.reason) == ("True", "OnDemand")


def test_failed_agents_degrade_the_pool_with_their_reason() -> None:
    failed = agent("ci-x", F, reason="CrashLoopBackOff", message="container jnlp: back-off 10s")
    _, degraded = pool_conditions([failed], min_idle=0, max_agents=5)
    assert (degraded.status, degraded.reason, degraded.message) == (
        "True",
        "AgentsFailed",
        "1 agent(s) failed: ci-x: CrashLoopBackOff: container jnlp: back-off 10s",
    )


def test_unschedulable_agents_are_reported() -> None:
    waiting = agent("ci-y", S, reason="Unschedulable", message="0/3 nodes are available")
    _, degraded = pool_conditions([waiting], min_idle=1, max_agents=5)
    assert (degraded.reason, degraded.message) == (
        "AgentsUnschedulable",
        "1 agent(s) cannot be scheduled: 0/3 nodes are available",
    )


def test_spec_errors_make_the_pool_not_ready_and_degraded() -> None:
    ready, degraded = pool_conditions(
        [agent("a")],
        min_idle=3,
        max_agents=2,
        spec_errors=["spec.minIdle (3) is greater than spec.maxAgents (2)"],
    )
    assert (ready.status, ready.reason, degraded.status, degraded.reason) == (
        "False",
        "InvalidSpec",
        "True",
        "InvalidSpec",
    )


def test_other_problems_degrade_the_pool() -> None:
    _, degraded = pool_conditions(
        [], min_idle=0, max_agents=1, problems=[("ApiQuotaTimeout", "2 steps timed out")]
    )
    assert (degraded.status, degraded.reason) == ("True", "ApiQuotaTimeout")


def test_conditions_carry_the_observed_generation() -> None:
    conditions = pool_conditions([], min_idle=0, max_agents=1, observed_generation=7)
    assert [c.observed_generation for c in conditions] == [7, 7]
