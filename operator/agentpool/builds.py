"""Builds as the command line sees them (pure): manifests in, steps in order, verdicts out.

`agentpool build run|list|logs|cancel|rerun` and `agentpool logs` do their I/O in `follow`
and `pipeline`; every decision they take is here, on plain dicts, so that it is unit-tested
without a cluster: which documents of a file are BuildSteps, the order a build's output is
shown in, a build's phase and row, the exit code of a build run, the body of a re-run.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import yaml

from agentpool.model import BuildStepSpec, SpecError, StepPhase, format_duration
from agentpool.timestamps import format_time, parse_time

__all__ = [
    "API_VERSION",
    "CANCEL_ANNOTATION",
    "BuildRow",
    "ManifestError",
    "StepView",
    "Verdict",
    "build_rows",
    "in_order",
    "last_lines",
    "parse_manifests",
    "prepare_steps",
    "rerun_body",
    "status_line",
    "verdict",
    "waiting_for",
]

API_VERSION = "agentpool.dev/v1alpha1"
KIND = "BuildStep"
# Read by the operator (steps/engine.py): the step ends Cancelled, later OnSuccess steps of its
# build are Skipped (PreviousStepCancelled).
CANCEL_ANNOTATION = "agentpool.dev/cancel"
# A script's own failure: the build run exits with the script's code. Anything else that fails
# a step (AgentLost, ApiQuotaTimeout, Timeout, ShellNotFound...) is the infrastructure's or the
# step definition's, and exits 1 with the reason.
SCRIPT_FAILED = "ScriptFailed"
# Metadata a re-run must not copy: the API server owns it, or it belongs to the earlier run.
_SERVER_METADATA = (
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
    "ownerReferences",
    "finalizers",
)
_RUN_ANNOTATIONS = (CANCEL_ANNOTATION, "kubectl.kubernetes.io/last-applied-configuration")
NAME_MAX = 253
GENERATED_SUFFIX = 5  # what the API server appends to a generateName


class ManifestError(ValueError):
    """A file holds something that is not a BuildStep manifest; the message says what to fix."""


# --- one step ------------------------------------------------------------------------------


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class StepView:
    """What the command line needs of a BuildStep body."""

    namespace: str
    name: str
    uid: str
    pool: str
    build: str
    order: int
    created: str
    phase: str | None  # None: waiting for its build, not yet given a phase
    reason: str | None
    message: str | None
    agent: str | None
    attempts: int
    exit_code: int | None
    log_tail: str
    started_at: str | None
    finished_at: str | None
    cancel_asked: bool

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> StepView:
        meta = body.get("metadata") or {}
        spec = body.get("spec") or {}
        status = body.get("status") or {}
        annotations = meta.get("annotations") or {}
        name = str(meta.get("name") or "")
        return cls(
            namespace=str(meta.get("namespace") or ""),
            name=name,
            uid=str(meta.get("uid") or ""),
            pool=str(spec.get("pool") or ""),
            build=_text(spec.get("build")) or name,
            order=_int(spec.get("order")) or 0,
            created=str(meta.get("creationTimestamp") or ""),
            phase=_text(status.get("phase")),
            reason=_text(status.get("reason")),
            message=_text(status.get("message")),
            agent=_text(status.get("agent")),
            attempts=max(_int(status.get("attempts")) or 0, 1),
            exit_code=_int(status.get("exitCode")),
            log_tail=_text(status.get("logTail")) or "",
            started_at=_text(status.get("startedAt")),
            finished_at=_text(status.get("finishedAt")),
            cancel_asked=annotations.get(CANCEL_ANNOTATION) == "true",
        )

    @property
    def is_final(self) -> bool:
        return self.phase in _FINAL

    @property
    def has_started(self) -> bool:
        """Whether its script started on an agent (so the agent holds output to read)."""
        if self.agent is None:
            return False
        return self.phase == StepPhase.RUNNING.value or (
            self.is_final and self.started_at is not None
        )

    @property
    def dir_id(self) -> str:
        """Its directory in the agent container (as `steps.logs.step_dir_id`)."""
        return f"{self.uid}.{self.attempts}"

    @property
    def shown_phase(self) -> str:
        return self.phase or "Waiting"


_FINAL = frozenset(p.value for p in StepPhase if p.is_final)


def status_line(step: StepView) -> str:
    """One line saying how a step ended (or where it is), e.g. for stderr after its output."""
    line = f"step {step.name} {step.shown_phase}"
    if step.exit_code is not None and step.phase in (
        StepPhase.SUCCEEDED.value,
        StepPhase.FAILED.value,
    ):
        line += f" (exit {step.exit_code})"
    if step.agent and step.has_started:
        line += f" on agent {step.agent}"
    if step.phase != StepPhase.SUCCEEDED.value:
        explanation = ": ".join(part for part in (step.reason, step.message) if part)
        if explanation:
            line += f": {explanation}"
    return line


def waiting_for(step: StepView) -> str:
    """What a step that has not started waits for, in a few words."""
    if step.phase is None:
        return "not scheduled yet (the operator starts a build's steps one after the other)"
    reason = step.reason if step.reason != step.phase else None  # not "Queued: Queued"
    why = ": ".join(part for part in (reason, step.message) if part)
    return f"{step.phase}: {why}" if why else step.phase


def last_lines(data: bytes, count: int) -> bytes:
    """The last `count` lines of `data` (a last line without a newline counts), as `tail -n`."""
    if count <= 0:
        return b""
    body = data[:-1] if data.endswith(b"\n") else data
    cut = len(body)
    for _ in range(count):
        cut = body.rfind(b"\n", 0, cut)
        if cut < 0:
            return data
    return data[cut + 1 :]


# --- manifests -----------------------------------------------------------------------------


def _describe(document: object) -> str:
    if isinstance(document, Mapping):
        kind = document.get("kind")
        if kind:
            return f"a {kind}"
        return "an object without kind"
    return f"a {type(document).__name__}"


def parse_manifests(text: str, source: str) -> list[dict[str, Any]]:
    """BuildStep manifests of `text` (multi-document YAML or JSON, or a v1 List), in order.

    Raises ManifestError naming the document and what to change.
    """
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or "unreadable"
        raise ManifestError(f"{source} is not valid YAML{where}: {problem}") from None
    steps: list[dict[str, Any]] = []
    for index, document in enumerate(documents, 1):
        items: Iterable[object] = [document]
        where = f"{source}: document {index}"
        if isinstance(document, Mapping) and document.get("kind") == "List":
            listed = document.get("items")
            if not isinstance(listed, list):
                raise ManifestError(f"{where} is a List without items: give it a list of steps")
            items = listed
        for position, item in enumerate(items, 1):
            here = where if item is document else f"{where}, item {position}"
            steps.append(_step_manifest(item, here))
    if not steps:
        raise ManifestError(f"{source} holds no BuildStep: give at least one BuildStep manifest")
    return steps


def _step_manifest(item: object, where: str) -> dict[str, Any]:
    if not isinstance(item, Mapping) or item.get("kind") != KIND:
        raise ManifestError(
            f"{where} is {_describe(item)}, not a BuildStep: build run takes BuildSteps only "
            "(apply pools with kubectl)"
        )
    if item.get("apiVersion") != API_VERSION:
        raise ManifestError(f"{where} has apiVersion {item.get('apiVersion')!r}: use {API_VERSION}")
    meta = item.get("metadata")
    if not isinstance(meta, Mapping) or not (
        _text(meta.get("name")) or _text(meta.get("generateName"))
    ):
        raise ManifestError(f"{where} has no metadata.name: give a name or a generateName")
    name = _text(meta.get("name")) or str(meta.get("generateName"))
    try:
        BuildStepSpec.from_body(item.get("spec") or {}, name=name)
    except SpecError as error:
        raise ManifestError(f"{where} ({name}): {error}") from None
    return copy.deepcopy(dict(item))


def prepare_steps(
    manifests: Sequence[Mapping[str, Any]], *, namespace: str | None, build: str | None
) -> tuple[str, list[dict[str, Any]]]:
    """The namespace and the bodies to create: `build` (if given) set on every step.

    A namespace in a manifest must agree with `namespace` when that is given (as kubectl
    requires); otherwise the manifests' one namespace is used, else `default`. When no step
    sets spec.order, each gets its position, so that the build runs in the order given
    (the operator breaks ties of spec.order by creation time, then by name).
    """
    named = {str(m["metadata"]["namespace"]) for m in manifests if m["metadata"].get("namespace")}
    if namespace is not None and named - {namespace}:
        raise ManifestError(
            f"a manifest names namespace {sorted(named - {namespace})[0]!r} but --namespace is "
            f"{namespace!r}: remove one of them"
        )
    if namespace is None and len(named) > 1:
        raise ManifestError(
            f"the manifests name several namespaces ({', '.join(sorted(named))}): "
            "run one build run per namespace"
        )
    target = namespace or (named.pop() if named else "default")
    ordered = any("order" in (m.get("spec") or {}) for m in manifests)
    bodies: list[dict[str, Any]] = []
    for position, manifest in enumerate(manifests):
        body = copy.deepcopy(dict(manifest))
        body["metadata"] = {**body["metadata"], "namespace": target}
        spec = dict(body.get("spec") or {})
        if build is not None:
            spec["build"] = build
        if not ordered:
            spec["order"] = position
        body["spec"] = spec
        bodies.append(body)
    return target, bodies


def in_order(steps: Iterable[StepView], given: Sequence[str] = ()) -> list[StepView]:
    """Steps in the order their output is shown: build, spec.order, then the order given
    (names in `given`), then creation time and name, as the operator runs them."""
    position = {name: index for index, name in enumerate(given)}
    return sorted(
        steps,
        key=lambda s: (s.build, s.order, position.get(s.name, len(position)), s.created, s.name),
    )


# --- verdicts ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """A build run's exit code and, when it failed, the step and why."""

    code: int
    step: str | None = None
    explanation: str = ""


def verdict(steps: Sequence[StepView]) -> Verdict:
    """The first failed step (in the order given) decides: its script's exit code when the
    script failed, 1 for anything else (infrastructure, timeout, cancellation); 0 when none
    failed."""
    for step in steps:
        if step.phase == StepPhase.FAILED.value:
            explanation = ": ".join(p for p in (step.reason, step.message) if p)
            if step.reason == SCRIPT_FAILED and step.exit_code:
                return Verdict(step.exit_code, step.name, explanation)
            return Verdict(1, step.name, explanation or "failed")
        if step.phase == StepPhase.CANCELLED.value:
            explanation = ": ".join(p for p in (step.reason, step.message) if p)
            return Verdict(1, step.name, explanation or "cancelled")
    return Verdict(0)


# --- builds of a namespace -----------------------------------------------------------------


@dataclass(frozen=True)
class BuildRow:
    build: str
    pool: str
    phase: str
    done: int
    total: int
    agent: str
    started: str
    duration: str


def build_phase(steps: Sequence[StepView]) -> str:
    """One word for a build: Failed/Cancelled/Succeeded once every step is final, Running
    once one started, else Queued or Pending."""
    phases = {s.phase for s in steps}
    if all(s.is_final for s in steps):
        for phase in (StepPhase.FAILED.value, StepPhase.CANCELLED.value):
            if phase in phases:
                return phase
        return StepPhase.SUCCEEDED.value
    if StepPhase.RUNNING.value in phases or any(s.is_final for s in steps):
        return StepPhase.RUNNING.value
    if StepPhase.QUEUED.value in phases:
        return StepPhase.QUEUED.value
    return StepPhase.PENDING.value


def build_rows(steps: Iterable[StepView], now: datetime) -> list[BuildRow]:
    """One row per build of `steps`, the most recently started or created first."""
    builds: dict[str, list[StepView]] = {}
    for step in steps:
        builds.setdefault(step.build, []).append(step)
    rows: list[tuple[str, BuildRow]] = []
    for name, members in builds.items():
        ordered = in_order(members)
        starts = [t for s in members if (t := parse_time(s.started_at)) is not None]
        ends = [t for s in members if (t := parse_time(s.finished_at)) is not None]
        phase = build_phase(members)
        started = min(starts) if starts else None
        if started is None:
            duration = ""
        else:
            end = max(ends) if ends and phase not in ("Running",) else now
            duration = format_duration(round(max((end - started).total_seconds(), 0.0), 1))
        ran = [s for s in ordered if s.agent and s.has_started]
        recent = max((s.created for s in members), default="")
        rows.append(
            (
                started.isoformat() if started else recent,
                BuildRow(
                    build=name,
                    pool=",".join(sorted({s.pool for s in members})),
                    phase=phase,
                    done=sum(1 for s in members if s.is_final),
                    total=len(members),
                    agent=ran[-1].agent or "" if ran else "",
                    started=format_time(started) if started else "",
                    duration=duration,
                ),
            )
        )
    rows.sort(key=lambda pair: (pair[0], pair[1].build), reverse=True)
    return [row for _, row in rows]


def rerun_body(body: Mapping[str, Any], build: str) -> dict[str, Any]:
    """A new BuildStep from an earlier one's manifest, in build `build`: no status, no
    server-owned metadata, a generated name derived from the old one."""
    meta = dict(body.get("metadata") or {})
    generated = _text(meta.get("generateName"))  # kept by the API server: reuse the prefix
    if generated is None:
        old_name = str(meta.get("name") or "step")
        generated = old_name[: NAME_MAX - GENERATED_SUFFIX - 1].rstrip("-.") + "-"
    new_meta: dict[str, Any] = {
        "generateName": generated,
        "namespace": meta.get("namespace"),
    }
    for key in ("labels", "annotations"):
        values = {k: v for k, v in (meta.get(key) or {}).items() if k not in _RUN_ANNOTATIONS}
        if values:
            new_meta[key] = values
    for key in _SERVER_METADATA:
        new_meta.pop(key, None)
    spec = copy.deepcopy(dict(body.get("spec") or {}))
    spec["build"] = build
    return {
        "apiVersion": body.get("apiVersion") or API_VERSION,
        "kind": KIND,
        "metadata": {k: v for k, v in new_meta.items() if v is not None},
        "spec": spec,
    }
