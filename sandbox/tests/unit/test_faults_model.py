"""The faults document: validation with clear messages, and which rule fires."""

from __future__ import annotations

import random

import pytest

from agentpool_sandbox.faults import Faults, FaultsError, error_status


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "JSON object"),
        ({"errors": [{"code": 404, "rate": 1}]}, r"errors\[0\].code"),
        ({"errors": [{"code": 429, "rate": 2}]}, r"errors\[0\].rate"),
        ({"errors": [{"code": 429, "verbs": ["fly"]}]}, "fly"),
        ({"latency": {"ms": -1}}, r"latency\[0\].ms"),
        ({"dropExecAfterSeconds": 0}, "dropExecAfterSeconds"),
        ({"closeWatchesAfterSeconds": "soon"}, "closeWatchesAfterSeconds"),
        ({"lag": 1}, "lag"),
    ],
)
def test_invalid_documents_name_the_field(doc: object, message: str) -> None:
    with pytest.raises(FaultsError, match=message):
        Faults.from_json(doc)


def test_round_trip_keeps_every_setting() -> None:
    doc = {
        "latency": [{"ms": 20, "jitterMs": 5, "verbs": ["get"]}],
        "errors": [
            {"code": 503, "rate": 0.5, "verbs": [], "resources": ["pods"], "retryAfterSeconds": 2}
        ],
        "dropExecAfterSeconds": 1.5,
        "closeWatchesAfterSeconds": 3,
        "seed": 4,
    }

    assert Faults.from_json(doc).to_json() == doc


def test_error_rule_filters_by_verb_and_resource_family() -> None:
    faults = Faults.from_json(
        {"errors": [{"code": 429, "rate": 1, "verbs": ["exec"], "resources": ["pods"]}]}
    )
    rng = random.Random(0)

    assert faults.error("exec", "pods/exec", rng) is not None
    assert faults.error("get", "pods", rng) is None
    assert faults.error("exec", "configmaps", rng) is None


def test_rate_zero_never_fires() -> None:
    faults = Faults.from_json({"errors": [{"code": 500, "rate": 0}]})

    assert all(faults.error("get", "pods", random.Random(i)) is None for i in range(50))


def test_latency_applies_only_to_its_verbs() -> None:
    faults = Faults.from_json({"latency": {"ms": 100, "verbs": ["create"]}})

    assert faults.delay("create", random.Random(0)) == pytest.approx(0.1)
    assert faults.delay("get", random.Random(0)) == 0.0


def test_watch_timeout_only_shortens() -> None:
    faults = Faults.from_json({"closeWatchesAfterSeconds": 2.5})

    assert faults.watch_timeout(None) == 3
    assert faults.watch_timeout(1) == 1
    assert faults.watch_timeout(300) == 3
    assert Faults().watch_timeout(300) is None


def test_429_status_carries_retry_after() -> None:
    rule = Faults.from_json({"errors": [{"code": 429, "retryAfterSeconds": 7}]}).errors[0]

    status = error_status(rule)

    assert (status["code"], status["reason"]) == (429, "TooManyRequests")
    assert status["details"]["retryAfterSeconds"] == 7


def test_a_rule_that_does_not_fire_hands_the_request_to_the_next_one() -> None:
    """Mixed rules: each matching rule draws in turn, the first that fires wins."""
    faults = Faults.from_json({"errors": [{"code": 500, "rate": 0.2}, {"code": 429, "rate": 0.1}]})
    rng = random.Random(1234)
    draws = 20_000

    codes = [
        rule.code if (rule := faults.error("get", "pods", rng)) else None for _ in range(draws)
    ]

    assert codes.count(500) / draws == pytest.approx(0.2, abs=0.015)
    assert codes.count(429) / draws == pytest.approx(0.8 * 0.1, abs=0.01)
    assert codes.count(None) / draws == pytest.approx(0.8 * 0.9, abs=0.015)


def test_draws_follow_the_seeded_sequence_rule_by_rule() -> None:
    """A rule that does not match draws nothing; a matching one draws exactly once."""
    faults = Faults.from_json(
        {
            "errors": [
                {"code": 503, "rate": 1, "verbs": ["create"]},
                {"code": 500, "rate": 0.5},
                {"code": 429, "rate": 0.5},
            ]
        }
    )
    rng, expected = random.Random(7), random.Random(7)

    for _ in range(200):
        got = faults.error("get", "pods", rng)
        first = expected.random()
        if first < 0.5:
            assert got is not None and got.code == 500
        elif expected.random() < 0.5:
            assert got is not None and got.code == 429
        else:
            assert got is None
