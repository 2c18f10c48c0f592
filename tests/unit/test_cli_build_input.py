"""`agentpool build run` and `agentpool logs`: bad input is one line saying what to fix."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from agentpool.cli import main

STEP = (
    "apiVersion: agentpool.dev/v1alpha1\nkind: BuildStep\nmetadata: {name: a, namespace: ci}\n"
    "spec: {pool: p, script: 'true'}\n"
)


def test_a_file_that_is_not_yaml_is_named(tmp_path: Path) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text("spec: [unclosed\n")

    result = CliRunner().invoke(main, ["build", "run", "-f", str(file)])

    assert result.exit_code == 1
    assert (
        result.output.strip()
        == f"Error: {file} is not valid YAML at line 2: expected ',' or ']', but got '<stream end>'"
    )


def test_a_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["build", "run", "-f", str(tmp_path / "nope.yaml")])

    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_stdin_is_read_with_a_dash() -> None:
    result = CliRunner().invoke(main, ["build", "run", "-f", "-"], input="kind: Pod\n")

    assert result.exit_code == 1
    assert "Error: stdin: document 1 is a Pod, not a BuildStep" in result.output


def test_a_namespace_flag_contradicting_the_manifest_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "a.yaml"
    file.write_text(STEP)

    result = CliRunner().invoke(main, ["build", "run", "-f", str(file), "-n", "prod"])

    assert result.exit_code == 1
    assert "a manifest names namespace 'ci' but --namespace is 'prod'" in result.output


def test_no_kubeconfig_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["logs", "step", "--kubeconfig", str(tmp_path / "missing-kubeconfig")]
    )

    assert result.exit_code == 1
    assert result.output.startswith("Error: no cluster to talk to")
    assert "give --kubeconfig, set KUBECONFIG" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_rerun_under_the_same_build_name_is_refused() -> None:
    result = CliRunner().invoke(main, ["build", "rerun", "b1", "--build", "b1"])

    assert result.exit_code == 2
    assert "--build must differ from BUILD" in result.output
