"""Which waiting build gets which agent: builds keep the agent they ran on while it lives."""

from __future__ import annotations

from agentpool.pool.assignment import Candidate, Request, assign


def free(name: str, *, current: bool = True) -> Candidate:
    return Candidate(name, free=True, claimable=True, current=current)


def starting(name: str) -> Candidate:
    return Candidate(name, free=False, claimable=True)


def held(name: str) -> Candidate:
    """Leased to another build, failing or being deleted."""
    return Candidate(name, free=False, claimable=False)


def test_builds_without_a_preference_take_free_agents_in_fifo_order_current_template_first() -> (
    None
):
    agents = [free("a", current=False), free("b"), free("c")]

    assert assign([Request("x"), Request("y")], agents) == {0: "b", 1: "c"}


def test_a_build_gets_the_agent_it_ran_on_even_behind_others() -> None:
    agents = [free("a"), free("b")]

    granted = assign([Request("x"), Request("y", prefer="a")], agents)

    assert granted == {0: "b", 1: "a"}


def test_nobody_takes_an_agent_a_waiting_build_prefers_and_the_build_waits_for_it() -> None:
    agents = [starting("a"), free("b")]

    granted = assign([Request("x"), Request("y", prefer="a")], agents)

    assert granted == {0: "b"}  # y waits for a to start; x was not given a


def test_a_build_whose_agent_is_gone_or_held_by_another_build_takes_any_free_agent() -> None:
    agents = [held("a"), free("b"), free("c")]

    granted = assign([Request("x", prefer="a"), Request("y", prefer="gone")], agents)

    assert granted == {0: "b", 1: "c"}


def test_of_two_builds_preferring_one_agent_the_first_gets_it_the_second_another() -> None:
    granted = assign([Request("x", prefer="a"), Request("y", prefer="a")], [free("a"), free("b")])

    assert granted == {0: "a", 1: "b"}


def test_without_free_agents_everyone_waits() -> None:
    assert assign([Request("x"), Request("y", prefer="a")], [starting("a"), held("b")]) == {}
