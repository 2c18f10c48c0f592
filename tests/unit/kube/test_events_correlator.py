"""EventCorrelator: which write each occurrence of an Event needs, without any I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from agentpool.kube.events import (
    COMBINED,
    MAX_SIMILAR,
    EventCorrelator,
    EventKey,
    ObjectRef,
    Write,
    repeat_patch,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
POD = ObjectRef("v1", "Pod", "ns", "agent-1", uid="u1")
KEY = EventKey(POD, "Normal", "Started", "agent started")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_first_occurrence_creates_and_a_settled_repeat_patches_the_same_event() -> None:
    correlator = EventCorrelator()

    first = correlator.observe(KEY, at(0))
    assert first is not None
    assert (first.verb, first.count, first.first, first.last) == ("create", 1, at(0), at(0))
    assert correlator.done(first, name="agent-1.abc") is None
    repeat = correlator.observe(KEY, at(5))

    assert repeat == Write(
        "patch", KEY, "agent started", 2, at(0), at(5), "agent-1.abc", first.series
    )
    assert repeat_patch(repeat) == {
        "count": 2,
        "lastTimestamp": "2026-01-01T00:00:05Z",
        "message": "agent started",
    }


def test_repeats_during_a_write_are_coalesced_into_one_follow_up_patch() -> None:
    correlator = EventCorrelator()
    first = correlator.observe(KEY, at(0))
    assert first is not None

    coalesced = [correlator.observe(KEY, at(s)) for s in range(1, 50)]
    follow_up = correlator.done(first, name="agent-1.abc")

    assert coalesced == [None] * 49
    assert follow_up is not None
    assert (follow_up.verb, follow_up.count, follow_up.last) == ("patch", 50, at(49))
    assert correlator.done(follow_up, name="agent-1.abc") is None


@pytest.mark.parametrize(
    ("other", "why"),
    [
        (EventKey(POD, "Warning", "Started", "agent started"), "type"),
        (EventKey(POD, "Normal", "Killed", "agent started"), "reason"),
        (EventKey(POD, "Normal", "Started", "agent restarted"), "message"),
        (
            EventKey(ObjectRef("v1", "Pod", "ns", "agent-2"), "Normal", "Started", "agent started"),
            "object",
        ),
        (
            EventKey(
                ObjectRef("v1", "Pod", "ns", "agent-1", uid="u2"),
                "Normal",
                "Started",
                "agent started",
            ),
            "uid",
        ),
    ],
)
def test_events_differing_in_any_key_part_are_distinct(other: EventKey, why: str) -> None:
    correlator = EventCorrelator()
    first = correlator.observe(KEY, at(0))
    assert first is not None
    correlator.done(first, name="agent-1.abc")

    write = correlator.observe(other, at(1))

    assert write is not None and (write.verb, write.count) == ("create", 1), why


@pytest.mark.parametrize(
    ("gap", "verb", "count"),
    [(timedelta(minutes=10), "patch", 2), (timedelta(minutes=10, seconds=1), "create", 1)],
)
def test_a_repeat_after_the_window_starts_a_new_event(
    gap: timedelta, verb: str, count: int
) -> None:
    correlator = EventCorrelator(window=timedelta(minutes=10))
    first = correlator.observe(KEY, T0)
    assert first is not None
    correlator.done(first, name="agent-1.abc")

    write = correlator.observe(KEY, T0 + gap)

    assert write is not None and (write.verb, write.count) == (verb, count)


def test_an_expired_event_is_created_again_with_the_whole_count() -> None:
    correlator = EventCorrelator()
    first = correlator.observe(KEY, at(0))
    assert first is not None
    correlator.done(first, name="agent-1.abc")
    patch = correlator.observe(KEY, at(1))
    assert patch is not None

    again = correlator.done(patch, missing=True)

    assert again is not None and (again.verb, again.count, again.first) == ("create", 2, at(0))


def test_a_failed_write_leaves_its_occurrences_to_the_next_write() -> None:
    correlator = EventCorrelator()
    first = correlator.observe(KEY, at(0))
    assert first is not None

    assert correlator.done(first) is None
    retry = correlator.observe(KEY, at(1))

    assert retry is not None and (retry.verb, retry.count) == ("create", 2)


def test_the_outcome_of_an_older_window_does_not_touch_the_new_one() -> None:
    correlator = EventCorrelator(window=timedelta(seconds=10))
    old = correlator.observe(KEY, at(0))
    new = correlator.observe(KEY, at(60))
    assert old is not None and new is not None

    assert correlator.done(old, name="agent-1.old") is None
    assert correlator.done(new, name="agent-1.new") is None

    repeat = correlator.observe(KEY, at(61))
    assert repeat is not None and (repeat.name, repeat.count) == ("agent-1.new", 2)


def test_memory_is_bounded_least_recently_seen_first() -> None:
    correlator = EventCorrelator(capacity=2)
    keys = [EventKey(POD, "Normal", "Started", f"m{i}") for i in range(3)]
    for i, key in enumerate(keys[:2]):
        write = correlator.observe(key, at(i))
        assert write is not None
        correlator.done(write, name=f"e{i}")
    correlator.observe(keys[0], at(2))  # m0 is now the most recently seen

    third = correlator.observe(keys[2], at(3))
    assert third is not None
    correlator.done(third, name="e2")

    assert len(correlator) == 2
    forgotten = correlator.observe(keys[1], at(4))
    assert forgotten is not None and (forgotten.verb, forgotten.count) == ("create", 1)


def launched(i: int) -> EventKey:
    return EventKey(POD, "Normal", "AgentLaunched", f"created agent pod a{i}")


def test_beyond_the_similar_limit_messages_share_one_combined_event() -> None:
    correlator = EventCorrelator(max_similar=MAX_SIMILAR)
    own = []
    for i in range(MAX_SIMILAR):
        write = correlator.observe(launched(i), at(i))
        assert write is not None
        own.append(write)
        correlator.done(write, name=f"e{i}")

    combined = correlator.observe(launched(MAX_SIMILAR), at(20))
    assert combined is not None
    correlator.done(combined, name="combined")
    repeat = correlator.observe(launched(MAX_SIMILAR + 1), at(21))

    assert [(w.verb, w.message) for w in own] == [
        ("create", f"created agent pod a{i}") for i in range(MAX_SIMILAR)
    ]
    assert (combined.verb, combined.key.message, combined.message) == (
        "create",
        COMBINED,
        f"{COMBINED}: created agent pod a{MAX_SIMILAR}",
    )
    assert repeat is not None
    assert (repeat.verb, repeat.name, repeat.count) == ("patch", "combined", 2)
    assert repeat_patch(repeat)["message"] == f"{COMBINED}: created agent pod a{MAX_SIMILAR + 1}"


def test_similar_messages_get_their_own_events_again_after_a_quiet_window() -> None:
    correlator = EventCorrelator(window=timedelta(seconds=10), max_similar=MAX_SIMILAR)
    for i in range(MAX_SIMILAR + 1):
        write = correlator.observe(launched(i), at(i * 0.1))
        assert write is not None
        correlator.done(write, name=f"e{i}")

    later = correlator.observe(launched(99), at(30))

    assert later is not None and later.message == "created agent pod a99"


def test_similar_messages_are_never_combined_unless_asked() -> None:
    correlator = EventCorrelator()

    writes = [correlator.observe(launched(i), at(i)) for i in range(3 * MAX_SIMILAR)]

    assert [w.message for w in writes if w] == [
        f"created agent pod a{i}" for i in range(3 * MAX_SIMILAR)
    ]
