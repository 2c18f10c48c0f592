"""Pod lifecycle profiles: data (YAML) describing the statuses the simulated kubelet reports.

A profile is a list of `steps` played once, then an optional `loop` played forever. Each step is a
pod-status snapshot (phase, conditions, one container state templated for every container) held
for `duration`. The last step of a profile without a loop is final. A step with `chance` below 1
is played only by that fraction of pods (the virtual-kubelet Pending window of the ACI seed).
This module is pure: no I/O except `load_file`, no clock; the kubelet turns snapshots into status.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

PROFILE_ANNOTATION = "sandbox.agentpool.dev/profile"
SEED_ANNOTATION = "sandbox.agentpool.dev/seed"
DEFAULT_PROFILE = "standard"

ContainerStateKind = Literal["none", "waiting", "running", "terminated"]
CONDITION_TYPES = (
    "PodReadyToStartContainers",
    "PodScheduled",
    "Initialized",
    "ContainersReady",
    "Ready",
)
PHASES = ("Pending", "Running", "Succeeded", "Failed", "Unknown")
_DURATION = re.compile(r"^(?P<value>\d+(?:\.\d+)?)(?P<unit>ms|s|m|h)$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


class ProfileError(ValueError):
    """A profile document is malformed; the message names the offending location."""


@dataclass(frozen=True)
class Condition:
    status: Literal["True", "False", "Unknown"]
    reason: str | None = None
    message: str | None = None


@dataclass(frozen=True)
class ContainerTemplate:
    """One container state applied to every container of the pod."""

    state: ContainerStateKind
    reason: str | None = None
    message: str | None = None
    exit_code: int = 0
    ready: bool = False
    # Counting a restart on entering this step is how crash loops grow `restartCount`.
    restart: bool = False


@dataclass(frozen=True)
class Step:
    duration: float
    phase: str
    conditions: Mapping[str, Condition]
    containers: ContainerTemplate
    scheduled: bool = True
    chance: float = 1.0
    reason: str | None = None
    message: str | None = None


@dataclass(frozen=True)
class Profile:
    name: str
    steps: tuple[Step, ...]
    loop: tuple[Step, ...] = ()
    description: str = ""

    def timeline(self, rng: random.Random) -> Iterator[Step]:
        """Steps this pod goes through: chance-steps decided once per pod, loop repeated forever."""
        for step in self.steps:
            if step.chance >= 1.0 or rng.random() < step.chance:
                yield step
        if not self.loop:
            return
        while True:
            yield from self.loop


@dataclass(frozen=True)
class ProfileSet:
    profiles: Mapping[str, Profile] = field(default_factory=dict)

    def get(self, name: str) -> Profile | None:
        return self.profiles.get(name)

    def names(self) -> list[str]:
        return sorted(self.profiles)

    def merged(self, other: ProfileSet) -> ProfileSet:
        """Profiles of `other` override same-named ones here (a file may redefine a built-in)."""
        return ProfileSet({**self.profiles, **other.profiles})


def parse_duration(value: object, where: str) -> float:
    """Seconds from `150ms`, `2s`, `1.5m` or a bare number of seconds."""
    if isinstance(value, bool):
        raise ProfileError(f"{where}: duration must be like 150ms or 2s, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value.strip())):
        seconds = float(match["value"]) * _UNIT_SECONDS[match["unit"]]
    else:
        raise ProfileError(f"{where}: duration must be like 150ms or 2s, got {value!r}")
    if seconds < 0:
        raise ProfileError(f"{where}: duration must not be negative")
    return seconds


def parse_chance(value: object, where: str) -> float:
    """A probability as a number in [0, 1] or a fraction string like `14/15`."""
    try:
        if isinstance(value, bool):
            raise ValueError
        chance = float(Fraction(value)) if isinstance(value, str) else float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, ZeroDivisionError):
        raise ProfileError(f"{where}: chance must be a number or a fraction like 14/15") from None
    if not 0.0 <= chance <= 1.0:
        raise ProfileError(f"{where}: chance must be between 0 and 1, got {value!r}")
    return chance


def _mapping(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ProfileError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def _optional_str(doc: Mapping[str, Any], key: str, where: str) -> str | None:
    value = doc.get(key)
    if value is not None and not isinstance(value, str):
        raise ProfileError(f"{where}.{key}: expected a string")
    return value


def _check_keys(doc: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(doc) - allowed)
    if unknown:
        raise ProfileError(f"{where}: unknown field(s) {unknown}; allowed: {sorted(allowed)}")


def _parse_condition(value: object, where: str) -> Condition:
    if isinstance(value, bool):
        return Condition("True" if value else "False")
    if isinstance(value, str):
        value = {"status": value}
    doc = _mapping(value, where)
    _check_keys(doc, {"status", "reason", "message"}, where)
    status = doc.get("status")
    if status not in ("True", "False", "Unknown"):
        raise ProfileError(f"{where}.status: must be True, False or Unknown, got {status!r}")
    return Condition(
        status=status,
        reason=_optional_str(doc, "reason", where),
        message=_optional_str(doc, "message", where),
    )


def _parse_containers(value: object, where: str) -> ContainerTemplate:
    doc = _mapping(value, where)
    _check_keys(doc, {"state", "reason", "message", "exitCode", "ready", "restart"}, where)
    state = doc.get("state")
    if state not in ("none", "waiting", "running", "terminated"):
        raise ProfileError(
            f"{where}.state: must be none, waiting, running or terminated, got {state!r}"
        )
    exit_code = doc.get("exitCode", 1 if state == "terminated" else 0)
    if not isinstance(exit_code, int) or isinstance(exit_code, bool):
        raise ProfileError(f"{where}.exitCode: expected an integer")
    for flag in ("ready", "restart"):
        if not isinstance(doc.get(flag, False), bool):
            raise ProfileError(f"{where}.{flag}: expected true or false")
    if doc.get("ready", False) and state != "running":
        raise ProfileError(f"{where}.ready: only a running container can be ready")
    return ContainerTemplate(
        state=state,
        reason=_optional_str(doc, "reason", where),
        message=_optional_str(doc, "message", where),
        exit_code=exit_code,
        ready=bool(doc.get("ready", False)),
        restart=bool(doc.get("restart", False)),
    )


_STEP_KEYS = {
    "duration",
    "phase",
    "conditions",
    "containers",
    "scheduled",
    "chance",
    "reason",
    "message",
}


def _parse_step(value: object, where: str) -> Step:
    doc = _mapping(value, where)
    _check_keys(doc, _STEP_KEYS, where)
    phase = doc.get("phase")
    if phase not in PHASES:
        raise ProfileError(f"{where}.phase: must be one of {list(PHASES)}, got {phase!r}")
    conditions_doc = _mapping(doc.get("conditions", {}), f"{where}.conditions")
    conditions: dict[str, Condition] = {}
    for ctype, cvalue in conditions_doc.items():
        if ctype not in CONDITION_TYPES:
            raise ProfileError(
                f"{where}.conditions: unknown condition {ctype!r}; known: {list(CONDITION_TYPES)}"
            )
        conditions[ctype] = _parse_condition(cvalue, f"{where}.conditions.{ctype}")
    if "containers" not in doc:
        raise ProfileError(f"{where}.containers: required (use state: none for no statuses)")
    scheduled = doc.get("scheduled", True)
    if not isinstance(scheduled, bool):
        raise ProfileError(f"{where}.scheduled: expected true or false")
    return Step(
        duration=parse_duration(doc.get("duration", 0), f"{where}.duration"),
        phase=phase,
        conditions=conditions,
        containers=_parse_containers(doc["containers"], f"{where}.containers"),
        scheduled=scheduled,
        chance=parse_chance(doc.get("chance", 1), f"{where}.chance"),
        reason=_optional_str(doc, "reason", where),
        message=_optional_str(doc, "message", where),
    )


def _parse_steps(value: object, where: str) -> tuple[Step, ...]:
    if not isinstance(value, list):
        raise ProfileError(f"{where}: expected a list of steps")
    return tuple(_parse_step(item, f"{where}[{index}]") for index, item in enumerate(value))


def parse_profile(name: str, value: object, where: str) -> Profile:
    doc = _mapping(value, where)
    _check_keys(doc, {"description", "steps", "loop"}, where)
    steps = _parse_steps(doc.get("steps", []), f"{where}.steps")
    loop = _parse_steps(doc.get("loop", []), f"{where}.loop")
    if not steps and not loop:
        raise ProfileError(f"{where}: a profile needs at least one step")
    if any(step.chance < 1.0 for step in loop):
        raise ProfileError(f"{where}.loop: chance is only allowed in steps, not in the loop")
    description = doc.get("description", "")
    if not isinstance(description, str):
        raise ProfileError(f"{where}.description: expected a string")
    return Profile(name=name, steps=steps, loop=loop, description=description)


def parse_document(document: object, source: str) -> ProfileSet:
    """A YAML document `{profiles: {name: {steps: [...], loop: [...]}}}` into profiles."""
    doc = _mapping(document, source)
    _check_keys(doc, {"profiles"}, source)
    profiles_doc = _mapping(doc.get("profiles", {}), f"{source}: profiles")
    profiles: dict[str, Profile] = {}
    for name, value in profiles_doc.items():
        if not isinstance(name, str) or not name:
            raise ProfileError(f"{source}: profile names must be non-empty strings")
        profiles[name] = parse_profile(name, value, f"{source}: profiles.{name}")
    return ProfileSet(profiles)


def load_file(path: Path) -> ProfileSet:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise ProfileError(f"{path}: cannot read profiles: {error}") from error
    return parse_document(document, str(path))


def builtin() -> ProfileSet:
    """The profiles shipped with the package (`profiles/builtin.yaml`)."""
    text = resources.files("agentpool_sandbox").joinpath("profiles/builtin.yaml").read_text("utf-8")
    return parse_document(yaml.safe_load(text), "builtin.yaml")


def load(profiles_file: Path | None) -> ProfileSet:
    """Built-ins, overridden and extended by `profiles_file` when given."""
    profiles = builtin()
    if profiles_file is not None:
        profiles = profiles.merged(load_file(profiles_file))
    return profiles


def pod_rng(pod: Mapping[str, Any]) -> random.Random:
    """Randomness for one pod: seeded by annotation when tests need a deterministic path."""
    annotations = pod.get("metadata", {}).get("annotations") or {}
    seed = annotations.get(SEED_ANNOTATION)
    return random.Random(seed) if seed is not None else random.Random()


def profile_name(pod: Mapping[str, Any]) -> str:
    annotations = pod.get("metadata", {}).get("annotations") or {}
    name = annotations.get(PROFILE_ANNOTATION, DEFAULT_PROFILE)
    return name if isinstance(name, str) and name else DEFAULT_PROFILE


@dataclass
class PodHistory:
    """What status rendering must remember between steps of one pod."""

    restart_count: int = 0
    started_at: str | None = None
    start_time: str | None = None
    last_terminated: dict[str, Any] | None = None
    transitions: dict[str, tuple[str, str]] = field(default_factory=dict)
    previous_state: ContainerStateKind = "none"


def _fill(text: str | None, values: Mapping[str, str]) -> str | None:
    if text is None:
        return None
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    return " ".join(text.split())


def _container_status(
    spec: Mapping[str, Any],
    template: ContainerTemplate,
    history: PodHistory,
    values: Mapping[str, str],
    container_id: str,
) -> dict[str, Any]:
    values = {**values, "container": str(spec.get("name", "")), "image": str(spec.get("image", ""))}
    state: dict[str, Any]
    if template.state == "waiting":
        state = {
            "waiting": _compact({"reason": template.reason, "message": template.message}, values)
        }
    elif template.state == "running":
        state = {"running": {"startedAt": history.started_at}}
    else:
        state = {
            "terminated": _compact(
                {
                    "exitCode": template.exit_code,
                    "reason": template.reason,
                    "message": template.message,
                    "startedAt": history.started_at,
                    "finishedAt": values["now"],
                    "containerID": container_id,
                },
                values,
            )
        }
    status: dict[str, Any] = {
        "name": spec.get("name"),
        "image": spec.get("image"),
        "imageID": "",
        "ready": template.ready,
        "restartCount": history.restart_count,
        "started": template.state == "running",
        "state": state,
        "lastState": {},
    }
    if history.last_terminated is not None:
        previous_id = container_id.rsplit("-", 1)[0] + f"-{history.last_terminated['restart']}"
        last = {k: v for k, v in history.last_terminated.items() if k != "restart"}
        status["lastState"] = {"terminated": {**last, "containerID": previous_id}}
    if template.state in ("running", "terminated"):
        status["containerID"] = container_id
        status["imageID"] = f"sandbox.local/{spec.get('image', '')}"
    return status


def _compact(doc: Mapping[str, Any], values: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if value is None:
            continue
        out[key] = _fill(value, values) if isinstance(value, str) and key == "message" else value
    return out


def render_status(
    pod: Mapping[str, Any],
    step: Step,
    history: PodHistory,
    *,
    now: str,
    pod_ip: str,
    host_ip: str,
) -> dict[str, Any]:
    """The pod `status` for `step`, updating `history` (restart count, transition times)."""
    spec = pod.get("spec") or {}
    containers: list[Mapping[str, Any]] = list(spec.get("containers") or [])
    name = str(pod.get("metadata", {}).get("name", ""))
    uid = str(pod.get("metadata", {}).get("uid", ""))
    names = "[" + " ".join(str(c.get("name", "")) for c in containers) + "]"
    values = {"pod": name, "containers": names, "now": now}
    template = step.containers

    if template.restart and history.previous_state != "none":
        history.restart_count += 1
    if template.state == "running" and (history.previous_state != "running" or template.restart):
        history.started_at = now
    if history.start_time is None and step.scheduled:
        history.start_time = now

    conditions: list[dict[str, Any]] = []
    for ctype in CONDITION_TYPES:
        condition = step.conditions.get(ctype)
        if condition is None:
            continue
        previous = history.transitions.get(ctype)
        changed_at = previous[1] if previous and previous[0] == condition.status else now
        history.transitions[ctype] = (condition.status, changed_at)
        entry: dict[str, Any] = {
            "type": ctype,
            "status": condition.status,
            "lastProbeTime": None,
            "lastTransitionTime": changed_at,
        }
        if condition.reason:
            entry["reason"] = condition.reason
        if condition.message:
            entry["message"] = _fill(condition.message, values)
        conditions.append(entry)

    status: dict[str, Any] = {"phase": step.phase, "conditions": conditions}
    if step.reason:
        status["reason"] = step.reason
    if step.message:
        status["message"] = _fill(step.message, values)
    if step.scheduled:
        status["hostIP"] = host_ip
        status["hostIPs"] = [{"ip": host_ip}]
        status["startTime"] = history.start_time
        status["qosClass"] = "BestEffort"
    if template.state in ("running", "terminated") or history.previous_state in (
        "running",
        "terminated",
    ):
        status["podIP"] = pod_ip
        status["podIPs"] = [{"ip": pod_ip}]
    if template.state != "none":
        status["containerStatuses"] = [
            _container_status(
                c,
                template,
                history,
                values,
                f"sandbox://{uid[:8]}-{c.get('name')}-{history.restart_count}",
            )
            for c in containers
        ]
    if template.state == "terminated":
        history.last_terminated = _compact(
            {
                "exitCode": template.exit_code,
                "reason": template.reason,
                "startedAt": history.started_at,
                "finishedAt": now,
                "restart": history.restart_count,
            },
            values,
        )
    history.previous_state = template.state
    return status
