from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from agentpool.config import SETTINGS, Config, ConfigError, LogFormat, render_settings_table

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_without_environment() -> None:
    config = Config.from_env({})

    assert config == Config()
    assert config.namespaces == ()
    assert (config.metrics_port, config.liveness_port) == (9090, 8080)
    assert config.standalone is False
    assert config.log_tail_bytes == 4096
    assert config.log_format is LogFormat.PLAIN
    assert config.watch_client_timeout > config.watch_server_timeout
    assert config.batching is True
    assert config.agent_state_dir == ""  # the container's ${TMPDIR:-/tmp}/.agentpool
    assert config.kubeconfig is None
    assert config.verbose is False


def test_reads_every_variable() -> None:
    environ = {
        "AGENTPOOL_NAMESPACES": "ci, builds ,",
        "AGENTPOOL_METRICS_PORT": "9100",
        "AGENTPOOL_LIVENESS_PORT": "0",
        "AGENTPOOL_STANDALONE": "true",
        "AGENTPOOL_PEERING_NAME": "ci-peering",
        "AGENTPOOL_LOG_TAIL_BYTES": "100",
        "AGENTPOOL_LOG_FORMAT": "JSON",
        "AGENTPOOL_WATCH_SERVER_TIMEOUT": "60",
        "AGENTPOOL_WATCH_CLIENT_TIMEOUT": "90.5",
        "AGENTPOOL_CONNECT_TIMEOUT": "3",
        "AGENTPOOL_BATCHING": "off",
        "AGENTPOOL_BUILD_GRACE": "0",
        "AGENTPOOL_SESSION_HOLD": "0.5",
        "AGENTPOOL_IMAGE_PULL_GRACE": "10",
        "AGENTPOOL_AGENT_STATE_DIR": "/var/agentpool",
        "AGENTPOOL_KUBECONFIG": "/home/me/.kube/config",
        "AGENTPOOL_VERBOSE": "1",
    }

    config = Config.from_env(environ)

    assert config == Config(
        namespaces=("ci", "builds"),
        metrics_port=9100,
        liveness_port=0,
        standalone=True,
        peering_name="ci-peering",
        log_tail_bytes=100,
        log_format=LogFormat.JSON,
        watch_server_timeout=60,
        watch_client_timeout=90.5,
        connect_timeout=3.0,
        batching=False,
        build_grace=0.0,
        session_hold=0.5,
        image_pull_grace=10.0,
        agent_state_dir="/var/agentpool",
        kubeconfig="/home/me/.kube/config",
        verbose=True,
    )


def test_every_field_is_a_setting_and_the_reverse() -> None:
    assert [s.name for s in SETTINGS] == [f.name for f in dataclasses.fields(Config)]


def test_empty_variables_keep_defaults() -> None:
    assert Config.from_env({"AGENTPOOL_METRICS_PORT": "", "AGENTPOOL_KUBECONFIG": " "}) == Config()


@pytest.mark.parametrize(
    ("variable", "value", "hint"),
    [
        ("AGENTPOOL_METRICS_PORT", "nine", "not an integer"),
        ("AGENTPOOL_METRICS_PORT", "70000", "not a TCP port"),
        ("AGENTPOOL_STANDALONE", "maybe", "use true or false"),
        ("AGENTPOOL_LOG_FORMAT", "xml", "use plain or json"),
        ("AGENTPOOL_CONNECT_TIMEOUT", "0", "more than zero"),
        ("AGENTPOOL_WATCH_SERVER_TIMEOUT", "5m", "not a number of seconds"),
        ("AGENTPOOL_BUILD_GRACE", "-1", "must not be negative"),
        ("AGENTPOOL_SESSION_HOLD", "-0.5", "must not be negative"),
        ("AGENTPOOL_AGENT_STATE_DIR", "state", "absolute path"),
        ("AGENTPOOL_LOG_TAIL_BYTES", "65537", "between 0 and 65536"),
    ],
)
def test_invalid_values_name_the_variable(variable: str, value: str, hint: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Config.from_env({variable: value})

    assert caught.value.setting == variable
    assert hint in caught.value.message


def test_overrides_replace_given_values_only() -> None:
    config = Config.from_env({"AGENTPOOL_METRICS_PORT": "9100"})

    overridden = config.with_overrides({"standalone": True, "metrics_port": None})

    assert (overridden.standalone, overridden.metrics_port) == (True, 9100)


def test_overrides_are_validated() -> None:
    with pytest.raises(ConfigError, match="not a setting"):
        Config().with_overrides({"metric_port": 1})
    with pytest.raises(ConfigError, match="AGENTPOOL_LIVENESS_PORT"):
        Config().with_overrides({"liveness_port": -1})


def test_settings_table_lists_every_setting() -> None:
    table = render_settings_table()

    assert table.startswith("| Environment variable | Flag | Default | Meaning |")
    assert "| `AGENTPOOL_METRICS_PORT` | `--metrics-port` | `9090` |" in table
    assert "| `AGENTPOOL_NAMESPACES` | `--namespace` | `(all)` |" in table
    assert len(table.strip().splitlines()) == 2 + len(SETTINGS)


def test_configuration_doc_has_the_current_table() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()

    assert render_settings_table() in doc


def test_watch_server_timeout_is_whole_seconds_as_the_api_takes_it() -> None:
    config = Config.from_env({"AGENTPOOL_WATCH_SERVER_TIMEOUT": "120"})
    assert (config.watch_server_timeout, type(config.watch_server_timeout)) == (120, int)
    assert Config.from_env({"AGENTPOOL_WATCH_SERVER_TIMEOUT": "60.0"}).watch_server_timeout == 60
    with pytest.raises(ConfigError, match=r"AGENTPOOL_WATCH_SERVER_TIMEOUT.*whole number"):
        Config.from_env({"AGENTPOOL_WATCH_SERVER_TIMEOUT": "0.5"})
    with pytest.raises(ConfigError, match="whole seconds"):
        Config(watch_server_timeout=1.5)  # type: ignore[arg-type]
