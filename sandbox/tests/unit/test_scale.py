"""The scale subresource's Scale view: replicas at the declared paths, selector as a string."""

from __future__ import annotations

import pytest

from agentpool_sandbox import scale
from agentpool_sandbox.errors import ApiError
from agentpool_sandbox.resources import BUILTINS, ResourceType

DEPLOYMENTS = next(t for t in BUILTINS if t.key == "deployments.apps")
WIDGETS = ResourceType(
    group="example.dev",
    version="v1",
    plural="widgets",
    singular="widget",
    kind="Widget",
    custom=True,
    scale=(".spec.size", ".status.size", ".status.selector"),
)


def test_deployment_scale_reads_replicas_and_selector() -> None:
    deployment = {
        "metadata": {"name": "web", "namespace": "ns", "resourceVersion": "7"},
        "spec": {
            "replicas": 3,
            "selector": {
                "matchLabels": {"app": "web"},
                "matchExpressions": [{"key": "tier", "operator": "In", "values": ["b", "a"]}],
            },
        },
        "status": {"replicas": 1},
    }

    view = scale.of(DEPLOYMENTS, deployment)

    assert view["spec"] == {"replicas": 3}
    assert view["status"] == {"replicas": 1, "selector": "app=web,tier in (a,b)"}
    assert view["metadata"] == {"name": "web", "namespace": "ns", "resourceVersion": "7"}


def test_custom_resource_scale_uses_the_crd_paths() -> None:
    widget = {"metadata": {"name": "w"}, "spec": {"size": 2}, "status": {"selector": "a=b"}}

    assert scale.of(WIDGETS, widget)["spec"] == {"replicas": 2}
    assert scale.of(WIDGETS, widget)["status"] == {"replicas": 0, "selector": "a=b"}
    assert scale.replicas_patch(WIDGETS, 5) == {"spec": {"size": 5}}


@pytest.mark.parametrize("replicas", [-1, "3", None, True])
def test_invalid_replicas_are_422(replicas: object) -> None:
    with pytest.raises(ApiError) as caught:
        scale.replicas_of("web", {"spec": {"replicas": replicas}})

    assert caught.value.code == 422
