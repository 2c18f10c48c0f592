"""Object names follow Helm's usual fullname rule: a release name that already holds the chart
name is used as it is (no `agentpool-agentpool-operator`); overrides win."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import Render

CHART = "agentpool-operator"


def fullname(objects: list[dict[str, Any]]) -> str:
    """The Deployment's name, which every other object's name starts with."""
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    name: str = deployment["metadata"]["name"]
    assert all(o["metadata"]["name"].startswith(name) for o in objects)
    return name


@pytest.mark.parametrize(
    ("release", "values", "expected"),
    [
        pytest.param("ap", {}, f"ap-{CHART}", id="release-without-chart-name"),
        pytest.param(CHART, {}, CHART, id="release-is-chart-name"),
        pytest.param(f"{CHART}-prod", {}, f"{CHART}-prod", id="release-holds-chart-name"),
        pytest.param(f"ci-{CHART}", {}, f"ci-{CHART}", id="release-ends-with-chart-name"),
        pytest.param("agentpool", {}, f"agentpool-{CHART}", id="chart-name-holds-release"),
        pytest.param("ap", {"nameOverride": "pool-op"}, "ap-pool-op", id="name-override"),
        pytest.param(
            "pool-op-ci", {"nameOverride": "pool-op"}, "pool-op-ci", id="release-holds-override"
        ),
        pytest.param("ap", {"fullnameOverride": "ci-operator"}, "ci-operator", id="fullname"),
    ],
)
def test_names_never_double_the_chart_name(
    render: Render, release: str, values: dict[str, Any], expected: str
) -> None:
    assert fullname(render(values, name=release)) == expected


def test_names_are_cut_to_63_characters(render: Render) -> None:
    assert fullname(render({}, name="r" * 70)) == "r" * 63
