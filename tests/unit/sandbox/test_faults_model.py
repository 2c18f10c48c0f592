"""The faults document: validation with clear messages, and which rule fires."""

from __future__ import annotations

import random

import pytest

from agentpool.sandbox.faults import Faults, FaultsError, error_status


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
