"""Typed views of AgentPool and BuildStep: parsing, defaults and the checks a schema cannot make.

The defaults here repeat those of `crds/`: the operator must behave the same when an API
server did not apply the CRD's defaults (an older copy of the CRD, a bypassed defaulting).
Pure module: no I/O, no kopf.
"""

from __future__ import annotations

import copy
import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from agentpool.timestamps import format_time

GROUP = "agentpool.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
AGENTPOOL_PLURAL = "agentpools"
BUILDSTEP_PLURAL = "buildsteps"

DURATION_PATTERN = re.compile(r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$")
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

SCRIPT_MAX_BYTES = 262144
RETRIES_MAX = 10


class SpecError(ValueError):
    """A spec the operator cannot act on; the message says what is wrong and how to fix it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def parse_duration(text: str) -> float:
    """Seconds in a duration such as `50ms`, `30s`, `5m` or `1h30m`; ValueError otherwise."""
    if not isinstance(text, str) or not DURATION_PATTERN.match(text):
        raise ValueError(
            f"{text!r} is not a duration: write a number and a unit (ms, s, m or h), "
            "several combined if needed, such as 500ms, 30s, 10m or 1h30m"
        )
    return sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(text))


def format_duration(seconds: float) -> str:
    """The shortest duration string for `seconds`, as written in specs (`90.0` -> `1m30s`)."""
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative: {seconds}")
    millis = round(seconds * 1000)
    if millis == 0:
        return "0s"
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else ""]
    if secs and millis:
        parts.append(f"{secs}.{millis:03d}".rstrip("0") + "s")
    elif secs:
        parts.append(f"{secs}s")
    elif millis:
        parts.append(f"{millis}ms")
    return "".join(parts)


# --- reading raw spec values -------------------------------------------------------------


def _mapping(spec: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any]:
    value = spec.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SpecError(f"{path}.{key}", f"must be an object, got {_kind(value)}")
    return value


def _integer(
    spec: Mapping[str, Any],
    key: str,
    path: str,
    default: int,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int:
    value = spec.get(key)
    if value is None:
        return default
    # bool is an int in Python, but `true` is no count in YAML.
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"{path}.{key}", f"must be an integer, got {_kind(value)} {value!r}")
    if minimum is not None and value < minimum:
        raise SpecError(f"{path}.{key}", f"must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise SpecError(f"{path}.{key}", f"must be at most {maximum}, got {value}")
    return value


def _boolean(spec: Mapping[str, Any], key: str, path: str, default: bool) -> bool:
    value = spec.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise SpecError(f"{path}.{key}", f"must be true or false, got {value!r}")
    return value


def _string(spec: Mapping[str, Any], key: str, path: str) -> str | None:
    value = spec.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise SpecError(f"{path}.{key}", f"must be a string, got {_kind(value)} {value!r}")
    return value


def _duration(
    spec: Mapping[str, Any], key: str, path: str, default: str, *, positive: bool = False
) -> float:
    text = _string(spec, key, path)
    text = default if text is None else text
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise SpecError(f"{path}.{key}", str(exc)) from None
    if positive and seconds <= 0:
        raise SpecError(f"{path}.{key}", f"must be longer than zero, got {text!r}")
    return seconds


def _kind(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    for type_, name in names.items():
        if isinstance(value, type_):
            return name
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, int | float):
        return "a number"
    return type(value).__name__


# --- AgentPool ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ReadinessSpec:
    """How an agent pod is judged started (spec.readiness)."""

    tolerate_virtual_kubelet_pending: bool = True

    @classmethod
    def from_body(cls, spec: Mapping[str, Any], path: str = "spec.readiness") -> ReadinessSpec:
        return cls(
            tolerate_virtual_kubelet_pending=_boolean(
                spec, "tolerateVirtualKubeletPending", path, cls.tolerate_virtual_kubelet_pending
            )
        )


@dataclass(frozen=True)
class ApiConnectionsSpec:
    """The pool's quota of concurrent Kubernetes API connections (spec.apiConnections)."""

    max: int = 32
    queue_timeout: float = 30.0

    @classmethod
    def from_body(
        cls, spec: Mapping[str, Any], path: str = "spec.apiConnections"
    ) -> ApiConnectionsSpec:
        return cls(
            max=_integer(spec, "max", path, cls.max, minimum=1),
            queue_timeout=_duration(spec, "queueTimeout", path, "30s"),
        )


@dataclass(frozen=True)
class SessionsSpec:
    """How steps share exec sessions (spec.sessions); durations in seconds."""

    batch_window: float = 0.05
    max_steps: int = 100
    linger: float = 2.0
    poll_interval: float = 2.0
    detach_after: float = 2.0

    @classmethod
    def from_body(cls, spec: Mapping[str, Any], path: str = "spec.sessions") -> SessionsSpec:
        return cls(
            batch_window=_duration(spec, "batchWindow", path, "50ms"),
            max_steps=_integer(spec, "maxSteps", path, cls.max_steps, minimum=1),
            linger=_duration(spec, "linger", path, "2s"),
            # Zero would make the recovery poll a busy loop against the API server.
            poll_interval=_duration(spec, "pollInterval", path, "2s", positive=True),
            # Zero would detach every step at once under contention: a session per poll.
            detach_after=_duration(spec, "detachAfter", path, "2s", positive=True),
        )


class WorkspaceIsolation(enum.StrEnum):
    """Whether builds that follow one another on an agent see each other's files."""

    PER_BUILD = "PerBuild"
    SHARED = "Shared"


@dataclass(frozen=True)
class WorkspaceSpec:
    """Where a build's steps work on an agent (spec.workspace)."""

    isolation: WorkspaceIsolation = WorkspaceIsolation.PER_BUILD

    @classmethod
    def from_body(cls, spec: Mapping[str, Any], path: str = "spec.workspace") -> WorkspaceSpec:
        text = _string(spec, "isolation", path) or cls.isolation.value
        try:
            return cls(isolation=WorkspaceIsolation(text))
        except ValueError:
            raise SpecError(
                f"{path}.isolation", f"{text!r} is not an isolation: use PerBuild or Shared"
            ) from None


@dataclass(frozen=True)
class AgentPoolSpec:
    """An AgentPool's spec with every default applied; durations in seconds."""

    # A private deep copy of spec.template; treat as read-only (copy before building a pod).
    template: Mapping[str, Any] = field(hash=False, repr=False)
    container_names: tuple[str, ...]
    agent_container: str
    min_idle: int = 0
    max_agents: int = 10
    idle_timeout: float = 600.0
    startup_timeout: float = 300.0
    ephemeral: bool = False
    readiness: ReadinessSpec = ReadinessSpec()
    api_connections: ApiConnectionsSpec = ApiConnectionsSpec()
    sessions: SessionsSpec = SessionsSpec()
    workspace: WorkspaceSpec = WorkspaceSpec()
    # spec.steps.ttlSecondsAfterFinished: the default retention of the pool's finished steps.
    step_ttl: int | None = None

    @classmethod
    def from_body(cls, spec: Mapping[str, Any]) -> AgentPoolSpec:
        """Parse `spec` of an AgentPool; raise SpecError for what the operator cannot run."""
        if not isinstance(spec, Mapping):
            raise SpecError("spec", f"must be an object, got {_kind(spec)}")
        template = spec.get("template")
        if not isinstance(template, Mapping):
            raise SpecError(
                "spec.template",
                "is required: give the pod template of the agents "
                "(metadata with labels/annotations, and a spec with containers)",
            )
        names = _container_names(template)
        agent = _string(spec, "agentContainer", "spec")
        if agent is None:
            agent = names[0]
        elif agent not in names:
            raise SpecError(
                "spec.agentContainer",
                f"container {agent!r} is not in spec.template.spec.containers "
                f"(found: {', '.join(names)}); name one of them, or leave agentContainer "
                "out to use the first",
            )
        min_idle = _integer(spec, "minIdle", "spec", cls.min_idle, minimum=0)
        max_agents = _integer(spec, "maxAgents", "spec", cls.max_agents, minimum=1)
        if min_idle > max_agents:
            raise SpecError(
                "spec.minIdle",
                f"minIdle ({min_idle}) is greater than maxAgents ({max_agents}): "
                "lower minIdle or raise maxAgents",
            )
        return cls(
            template=copy.deepcopy(dict(template)),
            container_names=names,
            agent_container=agent,
            min_idle=min_idle,
            max_agents=max_agents,
            idle_timeout=_duration(spec, "idleTimeout", "spec", "10m"),
            startup_timeout=_duration(spec, "startupTimeout", "spec", "5m", positive=True),
            ephemeral=_boolean(spec, "ephemeral", "spec", cls.ephemeral),
            readiness=ReadinessSpec.from_body(_mapping(spec, "readiness", "spec")),
            api_connections=ApiConnectionsSpec.from_body(_mapping(spec, "apiConnections", "spec")),
            sessions=SessionsSpec.from_body(_mapping(spec, "sessions", "spec")),
            workspace=WorkspaceSpec.from_body(_mapping(spec, "workspace", "spec")),
            step_ttl=_ttl(_mapping(spec, "steps", "spec"), "spec.steps"),
        )


def _container_names(template: Mapping[str, Any]) -> tuple[str, ...]:
    pod_spec = template.get("spec")
    containers = pod_spec.get("containers") if isinstance(pod_spec, Mapping) else None
    if not isinstance(containers, list) or not containers:
        raise SpecError(
            "spec.template.spec.containers",
            "is required and must list at least one container (name, image, and a command "
            "that keeps it running)",
        )
    names: list[str] = []
    for index, container in enumerate(containers):
        path = f"spec.template.spec.containers[{index}]"
        name = container.get("name") if isinstance(container, Mapping) else None
        if not isinstance(name, str) or not _DNS_LABEL.match(name) or len(name) > 63:
            raise SpecError(
                f"{path}.name",
                f"{name!r} is not a container name: use lower-case letters, digits and '-', "
                "at most 63 characters",
            )
        if name in names:
            raise SpecError(f"{path}.name", f"duplicate container name {name!r}: rename one")
        names.append(name)
    return tuple(names)


# --- BuildStep ---------------------------------------------------------------------------


class RunPolicy(enum.StrEnum):
    """When a step runs relative to the outcome of the earlier steps of its build."""

    ON_SUCCESS = "OnSuccess"
    ALWAYS = "Always"


@dataclass(frozen=True)
class EnvVar:
    """One literal environment variable of a step."""

    name: str
    value: str = ""


@dataclass(frozen=True)
class BuildStepSpec:
    """A BuildStep's spec with every default applied; `timeout` in seconds."""

    pool: str
    build: str
    script: str
    order: int = 0
    container: str | None = None  # None: the pool's agent container
    shell: str = "/bin/sh"
    env: tuple[EnvVar, ...] = ()
    working_dir: str | None = None
    timeout: float = 3600.0
    run_policy: RunPolicy = RunPolicy.ON_SUCCESS
    retries: int = 1
    ttl: int | None = None  # spec.ttlSecondsAfterFinished; None: the pool's default

    @classmethod
    def from_body(cls, spec: Mapping[str, Any], *, name: str) -> BuildStepSpec:
        """Parse `spec` of the BuildStep called `name` (the default build); raise SpecError."""
        if not isinstance(spec, Mapping):
            raise SpecError("spec", f"must be an object, got {_kind(spec)}")
        pool = _string(spec, "pool", "spec")
        if not pool:
            raise SpecError("spec.pool", "is required: name the AgentPool that runs the step")
        script = _string(spec, "script", "spec")
        if script is None or not script.strip():
            raise SpecError(
                "spec.script",
                "is empty: give the shell commands the step runs, such as 'make test'",
            )
        _refuse_nul(script, "spec.script")
        if len(script.encode()) > SCRIPT_MAX_BYTES:
            raise SpecError(
                "spec.script",
                f"is {len(script.encode())} bytes, more than {SCRIPT_MAX_BYTES}: put the script "
                "in the image or a ConfigMap and call it from the step",
            )
        build = _string(spec, "build", "spec")
        container = _string(spec, "container", "spec")
        if container is not None and not _DNS_LABEL.match(container):
            raise SpecError("spec.container", f"{container!r} is not a container name")
        shell = _string(spec, "shell", "spec")
        if shell is not None and not shell:
            raise SpecError("spec.shell", "is empty: give the path of a shell, such as /bin/sh")
        _refuse_nul(shell, "spec.shell")
        working_dir = _string(spec, "workingDir", "spec") or None
        _refuse_nul(working_dir, "spec.workingDir")
        run_policy_text = _string(spec, "runPolicy", "spec") or RunPolicy.ON_SUCCESS.value
        try:
            run_policy = RunPolicy(run_policy_text)
        except ValueError:
            raise SpecError(
                "spec.runPolicy",
                f"{run_policy_text!r} is not a run policy: use OnSuccess or Always",
            ) from None
        return cls(
            pool=pool,
            build=build or name,
            script=script,
            order=_integer(spec, "order", "spec", cls.order),
            container=container,
            shell=shell or cls.shell,
            env=_env(spec.get("env")),
            working_dir=working_dir,
            timeout=_duration(spec, "timeout", "spec", "1h", positive=True),
            run_policy=run_policy,
            retries=_integer(spec, "retries", "spec", cls.retries, minimum=0, maximum=RETRIES_MAX),
            ttl=_ttl(spec, "spec"),
        )


def _ttl(spec: Mapping[str, Any], path: str) -> int | None:
    if spec.get("ttlSecondsAfterFinished") is None:
        return None
    return _integer(spec, "ttlSecondsAfterFinished", path, 0, minimum=0)


def _env(items: object) -> tuple[EnvVar, ...]:
    if items is None:
        return ()
    if not isinstance(items, list):
        raise SpecError("spec.env", f"must be a list of name/value pairs, got {_kind(items)}")
    seen: set[str] = set()
    env: list[EnvVar] = []
    for index, item in enumerate(items):
        path = f"spec.env[{index}]"
        if not isinstance(item, Mapping):
            raise SpecError(path, f"must be an object with name and value, got {_kind(item)}")
        name = _string(item, "name", path)
        if name is None or not _ENV_NAME.match(name):
            raise SpecError(
                f"{path}.name",
                f"{name!r} is not a variable name: use letters, digits and underscores, "
                "not starting with a digit",
            )
        if name in seen:
            raise SpecError(f"{path}.name", f"duplicate variable {name!r}: keep one")
        seen.add(name)
        value = _string(item, "value", path) or ""
        _refuse_nul(value, f"{path}.value")
        env.append(EnvVar(name=name, value=value))
    return tuple(env)


def _refuse_nul(text: str | None, field: str) -> None:
    # A shell drops NUL bytes silently: "echo a\0b" would run as "echo ab".
    if text is not None and "\x00" in text:
        raise SpecError(
            field,
            f"contains a NUL character (at offset {text.index(chr(0))}), which a shell cannot "
            "read: remove it (a script can write one with printf '\\000')",
        )


# --- status shapes -----------------------------------------------------------------------


class StepPhase(enum.StrEnum):
    """BuildStep status.phase."""

    PENDING = "Pending"
    QUEUED = "Queued"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SKIPPED = "Skipped"
    CANCELLED = "Cancelled"

    @property
    def is_final(self) -> bool:
        """Whether the step will never change phase again."""
        return self in _FINAL_PHASES


_FINAL_PHASES = frozenset(
    {StepPhase.SUCCEEDED, StepPhase.FAILED, StepPhase.SKIPPED, StepPhase.CANCELLED}
)


class ConditionStatus(enum.StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


@dataclass(frozen=True)
class Condition:
    """A metav1.Condition; `reason` is CamelCase and required, `message` may be empty."""

    type: str
    status: ConditionStatus
    reason: str
    message: str = ""
    observed_generation: int | None = None

    def to_body(self, last_transition_time: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": self.type,
            "status": self.status.value,
            "reason": self.reason,
            "message": self.message,
            "lastTransitionTime": last_transition_time,
        }
        if self.observed_generation is not None:
            body["observedGeneration"] = self.observed_generation
        return body


def merge_condition(
    conditions: Sequence[Mapping[str, Any]] | None, condition: Condition, now: datetime
) -> list[dict[str, Any]]:
    """`conditions` with `condition` set; lastTransitionTime changes only when status does."""
    merged: list[dict[str, Any]] = []
    replaced = False
    for existing in conditions or ():
        if existing.get("type") != condition.type:
            merged.append(dict(existing))
            continue
        replaced = True
        unchanged = existing.get("status") == condition.status.value
        previous = existing.get("lastTransitionTime")
        since = previous if unchanged and isinstance(previous, str) else format_time(now)
        merged.append(condition.to_body(since))
    if not replaced:
        merged.append(condition.to_body(format_time(now)))
    return merged


@dataclass(frozen=True)
class AgentCounts:
    """AgentPool status.agents."""

    starting: int = 0
    idle: int = 0
    busy: int = 0
    failed: int = 0

    @property
    def total(self) -> int:
        return self.starting + self.idle + self.busy + self.failed

    def to_body(self) -> dict[str, int]:
        return {
            "starting": self.starting,
            "idle": self.idle,
            "busy": self.busy,
            "failed": self.failed,
            "total": self.total,
        }


@dataclass(frozen=True)
class StepCounts:
    """AgentPool status.steps."""

    queued: int = 0
    running: int = 0

    def to_body(self) -> dict[str, int]:
        return {"queued": self.queued, "running": self.running}


@dataclass(frozen=True)
class ApiConnectionsStatus:
    """AgentPool status.apiConnections; `summary` feeds the API printer column."""

    running: int
    queued: int
    limit: int

    @property
    def summary(self) -> str:
        return f"{self.running}/{self.limit}"

    def to_body(self) -> dict[str, Any]:
        return {
            "running": self.running,
            "queued": self.queued,
            "limit": self.limit,
            "summary": self.summary,
        }
