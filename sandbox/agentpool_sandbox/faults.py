"""Fault injection settings of the sandbox (`/sandbox/v1/faults`): a validated, typed document.

JSON shape (every field optional; PUT replaces the whole document)::

    {"latency": {"ms": 50, "jitterMs": 20, "verbs": ["get", "list"]},   # or a list of such rules
     "errors": [{"code": 429, "rate": 0.5, "verbs": ["create"], "resources": ["pods"],
                 "retryAfterSeconds": 1}],
     "dropExecAfterSeconds": 2.5,
     "closeWatchesAfterSeconds": 10,
     "seed": 42}

Empty `verbs`/`resources` match everything; a resource filter `pods` also matches its
subresources (`pods/exec`), `pods/exec` only that one.

Latency: the first rule whose verbs match applies.

Errors: every rule that matches the request draws in turn, in document order, and the first
one that fires answers the request; a rule that draws "no error" passes the request on to the
next matching rule. So `[{"code": 500, "rate": 0.2}, {"code": 429, "rate": 0.1}]` answers 500
with probability 0.2, 429 with probability 0.8 * 0.1 = 0.08, and serves the rest.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

VERBS = (
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
    "exec",
    "log",
)
ERROR_CODES = (429, 500, 503)
_MAX_SECONDS = 24 * 3600.0


class FaultsError(ValueError):
    """The faults document is invalid; the message names the field."""


@dataclass(frozen=True)
class LatencyRule:
    ms: float = 0.0
    jitter_ms: float = 0.0
    verbs: frozenset[str] = frozenset()

    def matches(self, verb: str) -> bool:
        return not self.verbs or verb in self.verbs


@dataclass(frozen=True)
class ErrorRule:
    code: int
    rate: float
    verbs: frozenset[str] = frozenset()
    resources: frozenset[str] = frozenset()
    retry_after_seconds: int = 1

    def matches(self, verb: str, resource: str | None) -> bool:
        if self.verbs and verb not in self.verbs:
            return False
        if not self.resources:
            return True
        if resource is None:
            return False
        return resource in self.resources or resource.split("/", 1)[0] in self.resources


@dataclass(frozen=True)
class Faults:
    latency: tuple[LatencyRule, ...] = ()
    errors: tuple[ErrorRule, ...] = ()
    drop_exec_after_seconds: float | None = None
    close_watches_after_seconds: float | None = None
    seed: int | None = None

    @classmethod
    def from_json(cls, doc: object) -> Faults:
        if not isinstance(doc, Mapping):
            raise FaultsError("faults: expected a JSON object")
        _no_unknown(
            doc,
            {"latency", "errors", "dropExecAfterSeconds", "closeWatchesAfterSeconds", "seed"},
            "faults",
        )
        latency_doc = doc.get("latency")
        if latency_doc is None:
            latency_items: list[Any] = []
        elif isinstance(latency_doc, list):
            latency_items = latency_doc
        else:
            latency_items = [latency_doc]
        errors_doc = doc.get("errors") or []
        if not isinstance(errors_doc, list):
            raise FaultsError("errors: expected a list of rules")
        seed = doc.get("seed")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise FaultsError("seed: expected an integer")
        return cls(
            latency=tuple(
                _latency(item, f"latency[{index}]") for index, item in enumerate(latency_items)
            ),
            errors=tuple(_error(item, f"errors[{index}]") for index, item in enumerate(errors_doc)),
            drop_exec_after_seconds=_seconds(doc, "dropExecAfterSeconds"),
            close_watches_after_seconds=_seconds(doc, "closeWatchesAfterSeconds"),
            seed=seed,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "latency": [
                {"ms": r.ms, "jitterMs": r.jitter_ms, "verbs": sorted(r.verbs)}
                for r in self.latency
            ],
            "errors": [
                {
                    "code": r.code,
                    "rate": r.rate,
                    "verbs": sorted(r.verbs),
                    "resources": sorted(r.resources),
                    "retryAfterSeconds": r.retry_after_seconds,
                }
                for r in self.errors
            ],
            "dropExecAfterSeconds": self.drop_exec_after_seconds,
            "closeWatchesAfterSeconds": self.close_watches_after_seconds,
            "seed": self.seed,
        }

    def delay(self, verb: str, rng: random.Random) -> float:
        """Seconds to hold a request before serving it."""
        for rule in self.latency:
            if rule.matches(verb):
                jitter = rng.uniform(-rule.jitter_ms, rule.jitter_ms) if rule.jitter_ms else 0.0
                return max(0.0, rule.ms + jitter) / 1000.0
        return 0.0

    def error(self, verb: str, resource: str | None, rng: random.Random) -> ErrorRule | None:
        """The error to answer with instead of serving: the first matching rule that fires.

        Each matching rule draws once, in order, until one fires; rules that do not match the
        verb and resource draw nothing, so they do not change the random sequence.
        """
        for rule in self.errors:
            if rule.matches(verb, resource) and rng.random() < rule.rate:
                return rule
        return None

    def watch_timeout(self, requested: int | None) -> int | None:
        """A `timeoutSeconds` that closes the watch early (whole seconds, as the API takes)."""
        if self.close_watches_after_seconds is None:
            return None
        forced = max(1, math.ceil(self.close_watches_after_seconds))
        return forced if requested is None or requested <= 0 else min(requested, forced)


def error_status(rule: ErrorRule) -> dict[str, Any]:
    """The Kubernetes `Status` body an API server sends for this kind of failure."""
    reason, message = {
        429: ("TooManyRequests", "Too many requests, please try again later."),
        500: ("InternalError", "Internal error occurred: injected by the sandbox (faults)"),
        503: ("ServiceUnavailable", "the server is currently unable to handle the request"),
    }[rule.code]
    details: dict[str, Any] = {"causes": [{"reason": "SandboxFault", "message": "injected"}]}
    if rule.code in (429, 503):
        details["retryAfterSeconds"] = rule.retry_after_seconds
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": details,
        "code": rule.code,
    }


def _no_unknown(doc: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(doc) - allowed)
    if unknown:
        raise FaultsError(f"{where}: unknown field(s) {unknown}; allowed: {sorted(allowed)}")


def _number(value: object, where: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FaultsError(f"{where}: expected a number")
    if not low <= float(value) <= high or math.isnan(float(value)):
        raise FaultsError(f"{where}: must be between {low:g} and {high:g}, got {value}")
    return float(value)


def _seconds(doc: Mapping[str, Any], key: str) -> float | None:
    value = doc.get(key)
    if value is None:
        return None
    seconds = _number(value, key, 0.0, _MAX_SECONDS)
    if seconds <= 0:
        raise FaultsError(f"{key}: must be greater than 0 (omit it or use null to disable)")
    return seconds


def _verbs(value: object, where: str) -> frozenset[str]:
    if value is None:
        return frozenset()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise FaultsError(f"{where}: expected a list of verbs")
    unknown = sorted(set(value) - set(VERBS))
    if unknown:
        raise FaultsError(f"{where}: unknown verb(s) {unknown}; known: {list(VERBS)}")
    return frozenset(value)


def _latency(value: object, where: str) -> LatencyRule:
    if not isinstance(value, Mapping):
        raise FaultsError(f"{where}: expected an object")
    _no_unknown(value, {"ms", "jitterMs", "verbs"}, where)
    return LatencyRule(
        ms=_number(value.get("ms", 0), f"{where}.ms", 0, _MAX_SECONDS * 1000),
        jitter_ms=_number(value.get("jitterMs", 0), f"{where}.jitterMs", 0, _MAX_SECONDS * 1000),
        verbs=_verbs(value.get("verbs"), f"{where}.verbs"),
    )


def _error(value: object, where: str) -> ErrorRule:
    if not isinstance(value, Mapping):
        raise FaultsError(f"{where}: expected an object")
    _no_unknown(value, {"code", "rate", "verbs", "resources", "retryAfterSeconds"}, where)
    code = value.get("code")
    if code not in ERROR_CODES:
        raise FaultsError(f"{where}.code: must be one of {list(ERROR_CODES)}, got {code!r}")
    resources = value.get("resources")
    if resources is not None and (
        not isinstance(resources, list) or not all(isinstance(r, str) and r for r in resources)
    ):
        raise FaultsError(f"{where}.resources: expected a list of resource names")
    retry_after = value.get("retryAfterSeconds", 1)
    if isinstance(retry_after, bool) or not isinstance(retry_after, int) or retry_after < 0:
        raise FaultsError(f"{where}.retryAfterSeconds: expected a non-negative integer")
    return ErrorRule(
        code=int(code),
        rate=_number(value.get("rate", 1.0), f"{where}.rate", 0.0, 1.0),
        verbs=_verbs(value.get("verbs"), f"{where}.verbs"),
        resources=frozenset(resources or ()),
        retry_after_seconds=retry_after,
    )
