"""Which verb, resource and pool a request counts under."""

from __future__ import annotations

import pytest
from multidict import MultiDict

from agentpool_sandbox.stats import Gauge, classify, pool_from_selector, pool_of_object


@pytest.mark.parametrize(
    ("method", "path", "query", "expected"),
    [
        ("GET", "/api/v1/namespaces/ci/pods", {}, ("list", "pods", "ci", None)),
        ("GET", "/api/v1/namespaces/ci/pods", {"watch": "true"}, ("watch", "pods", "ci", None)),
        ("GET", "/api/v1/watch/namespaces/ci/pods", {}, ("watch", "pods", "ci", None)),
        ("GET", "/api/v1/pods", {}, ("list", "pods", None, None)),
        ("POST", "/api/v1/namespaces/ci/pods", {}, ("create", "pods", "ci", None)),
        ("GET", "/api/v1/namespaces/ci/pods/a", {}, ("get", "pods", "ci", "a")),
        ("PUT", "/api/v1/namespaces/ci/pods/a/status", {}, ("update", "pods/status", "ci", "a")),
        ("POST", "/api/v1/namespaces/ci/pods/a/exec", {}, ("exec", "pods/exec", "ci", "a")),
        ("GET", "/api/v1/namespaces/ci/pods/a/exec", {}, ("exec", "pods/exec", "ci", "a")),
        ("GET", "/api/v1/namespaces/ci/pods/a/log", {}, ("log", "pods/log", "ci", "a")),
        ("DELETE", "/api/v1/namespaces/ci/pods", {}, ("deletecollection", "pods", "ci", None)),
        ("DELETE", "/api/v1/namespaces/ci/pods/a", {}, ("delete", "pods", "ci", "a")),
        ("GET", "/api/v1/namespaces/ci", {}, ("get", "namespaces", None, "ci")),
        (
            "PUT",
            "/api/v1/namespaces/ci/finalize",
            {},
            ("update", "namespaces/finalize", None, "ci"),
        ),
        (
            "PATCH",
            "/apis/agentpool.dev/v1alpha1/namespaces/ci/buildsteps/s/status",
            {},
            ("patch", "buildsteps.agentpool.dev/status", "ci", "s"),
        ),
        (
            "GET",
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            {},
            ("list", "customresourcedefinitions.apiextensions.k8s.io", None, None),
        ),
        ("GET", "/apis/agentpool.dev/v1alpha1", {}, ("get", None, None, None)),
        ("GET", "/openapi/v3", {}, ("get", None, None, None)),
    ],
)
def test_classify_like_the_api_server(
    method: str, path: str, query: dict[str, str], expected: tuple[object, ...]
) -> None:
    info = classify(method, path, MultiDict(query))

    assert (info.verb, info.resource, info.namespace, info.name) == expected


def test_only_watches_are_marked_as_watches() -> None:
    assert classify("GET", "/api/v1/pods", MultiDict(watch="1")).watch
    assert not classify("GET", "/api/v1/pods", MultiDict()).watch


def test_pool_from_selector_and_objects() -> None:
    assert pool_from_selector("app=x,agentpool.dev/pool=linux") == "linux"
    assert pool_from_selector("agentpool.dev/pool==gpu") == "gpu"
    assert pool_from_selector("agentpool.dev/pool!=gpu") is None
    assert pool_of_object("pods", {"metadata": {"labels": {"agentpool.dev/pool": "p"}}}) == "p"
    assert pool_of_object("buildsteps.agentpool.dev", {"spec": {"pool": "q"}}) == "q"


def test_gauge_reset_keeps_open_connections() -> None:
    gauge = Gauge()
    gauge.up()
    gauge.up()
    gauge.down()

    gauge.reset()

    assert (gauge.current, gauge.peak) == (1, 1)
