"""Operator settings: one typed, frozen Config read from AGENTPOOL_* variables.

Every setting is described once, in SETTINGS; the CLI derives its flags from the same table
and the documentation (docs/configuration.md) is rendered from it.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

ENV_PREFIX = "AGENTPOOL_"
# Upper bound of status.logTail; the CRD schema caps the field at the same length.
MAX_LOG_TAIL_BYTES = 65536


class LogFormat(enum.StrEnum):
    PLAIN = "plain"
    JSON = "json"


class ConfigError(ValueError):
    """A setting with a value the operator cannot use; names the variable and what is expected."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{setting}: {message}")
        self.setting = setting
        self.message = message


@dataclass(frozen=True)
class Config:
    """Operator settings. Defaults suit a real cluster; see SETTINGS for what each one means."""

    namespaces: tuple[str, ...] = ()
    metrics_port: int = 9090
    liveness_port: int = 8080
    standalone: bool = False
    peering_name: str = "agentpool"
    log_tail_bytes: int = 4096
    log_format: LogFormat = LogFormat.PLAIN
    # Whole seconds: it travels as the watch's `timeoutSeconds`, an integer in the API.
    watch_server_timeout: int = 300
    # Longer than the server timeout so that the server ends a quiet watch, not the client.
    watch_client_timeout: float = 330.0
    connect_timeout: float = 10.0
    batching: bool = True
    build_grace: float = 1.0
    session_hold: float = 0.2
    image_pull_grace: float = 60.0
    # Empty: the container decides, `${TMPDIR:-/tmp}/.agentpool` (each sandbox container has
    # a TMPDIR of its own, as a real pod has its own /tmp).
    agent_state_dir: str = ""
    kubeconfig: str | None = None
    verbose: bool = False

    def __post_init__(self) -> None:
        for port_field in ("metrics_port", "liveness_port"):
            port = getattr(self, port_field)
            if not 0 <= port <= 65535:
                raise ConfigError(_variable(port_field), f"{port} is not a TCP port (0-65535)")
        if not 0 <= self.log_tail_bytes <= MAX_LOG_TAIL_BYTES:
            # Every step's status carries the tail; thousands of steps must stay cheap to list.
            raise ConfigError(
                _variable("log_tail_bytes"), f"must be between 0 and {MAX_LOG_TAIL_BYTES}"
            )
        for seconds_field in (
            "watch_server_timeout",
            "watch_client_timeout",
            "connect_timeout",
        ):
            if getattr(self, seconds_field) <= 0:
                raise ConfigError(_variable(seconds_field), "must be more than zero seconds")
        if not float(self.watch_server_timeout).is_integer():
            raise ConfigError(_variable("watch_server_timeout"), "must be whole seconds")
        for seconds_field in ("build_grace", "session_hold", "image_pull_grace"):
            if getattr(self, seconds_field) < 0:
                raise ConfigError(_variable(seconds_field), "must not be negative")
        if self.agent_state_dir and not self.agent_state_dir.startswith("/"):
            raise ConfigError(
                _variable("agent_state_dir"),
                "must be an absolute path inside agent containers (or empty for the default)",
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Config:
        """Settings from AGENTPOOL_* variables in `environ`; unset or empty ones keep defaults."""
        values: dict[str, Any] = {}
        for setting in SETTINGS:
            raw = environ.get(setting.env_var, "").strip()
            if raw:
                values[setting.name] = setting.parse(setting.env_var, raw)
        return cls(**values)

    def with_overrides(self, overrides: Mapping[str, Any]) -> Config:
        """A copy with the given fields replaced (CLI flags); None values mean 'not given'."""
        given = {name: value for name, value in overrides.items() if value is not None}
        unknown = set(given) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ConfigError(", ".join(sorted(unknown)), "not a setting")
        return dataclasses.replace(self, **given)


# --- parsing -------------------------------------------------------------------------------


def _parse_int(variable: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(variable, f"{raw!r} is not an integer") from None


def _parse_whole_seconds(variable: str, raw: str) -> int:
    try:
        seconds = float(raw)
    except ValueError:
        raise ConfigError(variable, f"{raw!r} is not a number of seconds") from None
    if not seconds.is_integer():
        raise ConfigError(variable, f"{raw!r} is not a whole number of seconds")
    return int(seconds)


def _parse_seconds(variable: str, raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(variable, f"{raw!r} is not a number of seconds") from None


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _parse_bool(variable: str, raw: str) -> bool:
    lowered = raw.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(variable, f"{raw!r} is not a boolean: use true or false")


def _parse_str(variable: str, raw: str) -> str:
    return raw


def _parse_namespaces(variable: str, raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _parse_log_format(variable: str, raw: str) -> LogFormat:
    try:
        return LogFormat(raw.lower())
    except ValueError:
        raise ConfigError(variable, f"{raw!r} is not a log format: use plain or json") from None


@dataclass(frozen=True)
class Setting:
    """One row of the settings table: a Config field, its variable and flag, and its meaning."""

    name: str
    parse: Callable[[str, str], Any]
    meaning: str
    # kopf's spelling where kopf has the option (and the Helm chart renders it); else the name.
    flag_name: str | None = None

    @property
    def env_var(self) -> str:
        return _variable(self.name)

    @property
    def flag(self) -> str:
        if self.flag_name:
            return self.flag_name
        name = self.name.replace("_", "-")
        # A switch must be able to undo its environment variable (AGENTPOOL_STANDALONE=true).
        return f"--{name}/--no-{name}" if isinstance(self.default, bool) else f"--{name}"

    @property
    def default(self) -> Any:
        return _DEFAULTS[self.name]

    @property
    def default_text(self) -> str:
        value = self.default
        if value is None:
            return "(none)"
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, tuple):
            return ",".join(value) if value else "(all)"
        if isinstance(value, enum.Enum):
            return str(value.value)
        if isinstance(value, float):
            return f"{value:g}"
        return str(value) or "(empty)"


def _variable(name: str) -> str:
    return ENV_PREFIX + name.upper()


_DEFAULTS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(Config)}

SETTINGS: tuple[Setting, ...] = (
    Setting(
        "namespaces",
        _parse_namespaces,
        "Namespaces to watch: comma-separated in the variable, the flag repeated; none (or "
        "`--all-namespaces`) watches every namespace, which needs cluster-wide RBAC.",
        "--namespace",
    ),
    Setting("metrics_port", _parse_int, "Port of the Prometheus /metrics endpoint."),
    Setting("liveness_port", _parse_int, "Port of the /healthz liveness endpoint."),
    Setting(
        "standalone",
        _parse_bool,
        "Run without peering: do not coordinate with other operator replicas.",
    ),
    Setting(
        "peering_name",
        _parse_str,
        "Peering object through which replicas elect the one that works (when not standalone).",
        "--peering",
    ),
    Setting(
        "log_tail_bytes",
        _parse_int,
        f"Bytes of a step's latest output kept in its status.logTail "
        f"(at most {MAX_LOG_TAIL_BYTES}).",
    ),
    Setting("log_format", _parse_log_format, "Operator log format: plain or json."),
    Setting(
        "watch_server_timeout",
        _parse_whole_seconds,
        "Seconds after which the API server ends a watch request (the operator then resumes it).",
    ),
    Setting(
        "watch_client_timeout",
        _parse_seconds,
        "Seconds after which the operator gives up on a silent watch connection; keep it above "
        "watch_server_timeout.",
    ),
    Setting(
        "connect_timeout",
        _parse_seconds,
        "Seconds to wait for a connection to the API server to open.",
    ),
    Setting(
        "batching",
        _parse_bool,
        "Run successive steps of a build through one exec session; false opens one session per "
        "step (as the Jenkins plugin does; for comparisons).",
        "--batching/--no-batching",
    ),
    Setting(
        "build_grace",
        _parse_seconds,
        "Seconds a finished build keeps its agent, so that a next step of the same build "
        "created just after still lands on it.",
    ),
    Setting(
        "session_hold",
        _parse_seconds,
        "Seconds an exec session keeps its API connection before it yields to short requests "
        "that cannot get a slot at all (only when sessions may hold every slot: "
        "apiConnections.max 1, or a limit just lowered); other builds waiting for a session "
        "never make it yield between steps. 0 yields after every step in that case.",
    ),
    Setting(
        "image_pull_grace",
        _parse_seconds,
        "Seconds an agent pod may report an image pull error before it is counted as failed "
        "(pulls often recover by themselves).",
    ),
    Setting(
        "agent_state_dir",
        _parse_str,
        "Directory inside agent containers where step scripts, output and exit codes are kept, "
        "so that steps survive dropped sessions and operator restarts. Empty (the default): "
        "${TMPDIR:-/tmp}/.agentpool as the container's shell resolves it; a container's own "
        "AGENTPOOL_STATE_DIR variable overrides both.",
    ),
    Setting(
        "kubeconfig",
        _parse_str,
        "Path of a kubeconfig file; none uses the in-cluster service account, or else the "
        "default kubeconfig.",
    ),
    Setting("verbose", _parse_bool, "Log debug messages too."),
)


def render_settings_table() -> str:
    """The settings as a Markdown table: variable, flag, default and meaning."""
    rows = [
        "| Environment variable | Flag | Default | Meaning |",
        "| --- | --- | --- | --- |",
    ]
    for setting in SETTINGS:
        default = setting.default_text.replace("|", "\\|")
        rows.append(f"| `{setting.env_var}` | `{setting.flag}` | `{default}` | {setting.meaning} |")
    return "\n".join(rows) + "\n"
