"""`agentpool run`: flags override AGENTPOOL_* variables, which override defaults."""

from __future__ import annotations

import click
import pytest

from agentpool.cli import config_from, main
from agentpool.config import SETTINGS, Config, ConfigError, LogFormat


def parse(*args: str) -> dict[str, object]:
    command = main.get_command(click.Context(main), "run")
    assert command is not None
    return command.make_context("run", list(args)).params


def test_no_flags_no_environment_gives_defaults() -> None:
    assert config_from(parse(), {}) == Config()


def test_environment_applies_when_no_flag_is_given() -> None:
    config = config_from(parse(), {"AGENTPOOL_METRICS_PORT": "9100", "AGENTPOOL_BATCHING": "0"})

    assert (config.metrics_port, config.batching) == (9100, False)


def test_flag_wins_over_environment() -> None:
    environ = {"AGENTPOOL_METRICS_PORT": "9100", "AGENTPOOL_LOG_FORMAT": "json"}

    config = config_from(parse("--metrics-port=9200", "--log-format", "plain"), environ)

    assert (config.metrics_port, config.log_format) == (9200, LogFormat.PLAIN)


def test_repeated_namespace_flags_replace_the_variable() -> None:
    config = config_from(
        parse("--namespace=team-a", "--namespace", "team-b"), {"AGENTPOOL_NAMESPACES": "other"}
    )

    assert config.namespaces == ("team-a", "team-b")


def test_all_namespaces_overrides_namespaces_from_the_environment() -> None:
    config = config_from(parse("--all-namespaces"), {"AGENTPOOL_NAMESPACES": "ci"})

    assert config.namespaces == ()


def test_all_namespaces_with_a_namespace_is_refused() -> None:
    with pytest.raises(ConfigError, match="--all-namespaces"):
        config_from(parse("--all-namespaces", "--namespace=ci"), {})


def test_negative_boolean_flag_wins_over_a_true_variable() -> None:
    config = config_from(parse("--no-batching"), {"AGENTPOOL_BATCHING": "true"})

    assert config.batching is False


def test_bad_flag_value_names_the_flag() -> None:
    with pytest.raises(ConfigError, match="--metrics-port"):
        config_from(parse("--metrics-port=ninety"), {})


def test_every_setting_has_a_flag() -> None:
    command = main.get_command(click.Context(main), "run")
    assert command is not None
    opts = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}

    missing = [s.flag for s in SETTINGS if not set(s.flag.split("/")) <= opts]

    assert missing == []


def test_chart_style_flags_parse() -> None:
    config = config_from(
        parse(
            "--standalone",
            "--metrics-port=9090",
            "--liveness-port=8080",
            "--log-format=json",
            "--verbose",
            "--peering=agentpool",
        ),
        {},
    )

    assert config.standalone and config.verbose and config.log_format is LogFormat.JSON


@pytest.mark.parametrize("name", ["standalone", "verbose"])
def test_every_switch_can_undo_its_variable(name: str) -> None:
    environ = {f"AGENTPOOL_{name.upper()}": "true"}

    config = config_from(parse(f"--no-{name}"), environ)

    assert getattr(config, name) is False
