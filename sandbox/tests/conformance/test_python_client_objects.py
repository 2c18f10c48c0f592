"""The official `kubernetes` client with the custom resources: create, watch, status, errors."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from conformance_cluster import ROOT, Cluster
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

GROUP, VERSION = "agentpool.dev", "v1alpha1"


@pytest.fixture
def custom(crds: Cluster) -> Iterator[Any]:
    api_client = config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(crds.kubeconfig)
    )
    try:
        yield client.CustomObjectsApi(api_client)
    finally:
        api_client.close()


def step(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "BuildStep",
        "metadata": {"name": name},
        "spec": {"pool": "demo", "script": "echo hi", **spec},
    }


def test_create_applies_defaults(custom: Any, namespace: str) -> None:
    created = custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, "buildsteps", step("one")
    )

    assert created["spec"]["runPolicy"] == "OnSuccess"
    assert created["spec"]["timeout"] == "1h"
    assert created["metadata"]["uid"]


def test_invalid_object_is_a_422_with_causes(custom: Any, namespace: str) -> None:
    with pytest.raises(ApiException) as caught:
        custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, "buildsteps", step("bad", retries=99, runPolicy="Never")
        )

    assert caught.value.status == 422
    assert "spec.retries" in str(caught.value.body)
    assert "spec.runPolicy" in str(caught.value.body)


def test_duplicate_env_names_are_rejected(custom: Any, namespace: str) -> None:
    env = [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]

    with pytest.raises(ApiException) as caught:
        custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, "buildsteps", step("dup", env=env)
        )

    assert caught.value.status == 422
    assert "spec.env[1]" in str(caught.value.body)


def test_long_pool_name_is_rejected(custom: Any, namespace: str) -> None:
    pool = yaml.safe_load((ROOT / "examples" / "agentpool.yaml").read_text())
    pool["metadata"]["name"] = "p" * 64

    with pytest.raises(ApiException) as caught:
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "agentpools", pool)

    assert caught.value.status == 422
    assert "at most 63 characters" in str(caught.value.body)


def test_status_subresource_round_trip(custom: Any, namespace: str) -> None:
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "buildsteps", step("st"))
    status = {"status": {"phase": "Failed", "exitCode": 1, "reason": "ScriptFailed"}}

    patched = custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, "buildsteps", "st", status
    )

    assert patched["status"]["phase"] == "Failed"
    assert patched["metadata"]["generation"] == 1


def test_watch_streams_added_and_deleted(custom: Any, namespace: str) -> None:
    events: list[tuple[str, str]] = []
    stopper = watch.Watch()  # type: ignore[no-untyped-call]
    added = threading.Event()

    def consume() -> None:
        for event in stopper.stream(  # type: ignore[no-untyped-call]
            custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            "buildsteps",
            timeout_seconds=30,
        ):
            events.append((event["type"], event["object"]["metadata"]["name"]))
            if event["type"] == "ADDED":
                added.set()
            if event["type"] == "DELETED":
                stopper.stop()  # type: ignore[no-untyped-call]

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "buildsteps", step("w"))
    assert added.wait(30)
    custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, "buildsteps", "w")
    consumer.join(30)

    assert not consumer.is_alive()
    assert events[0] == ("ADDED", "w")
    assert events[-1] == ("DELETED", "w")


def test_a_spec_that_is_not_an_object_is_a_422(custom: Any, namespace: str) -> None:
    body = {**step("stringly"), "spec": "run it"}

    with pytest.raises(ApiException) as caught:
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "buildsteps", body)

    assert caught.value.status == 422
    assert "spec in body must be of type object" in str(caught.value.body)


def test_a_pod_field_of_the_wrong_type_is_a_400(crds: Cluster, namespace: str) -> None:
    """Built-in bodies are decoded into typed structs first: a wrong type is a BadRequest.

    (The typed client refuses such a body itself; kubectl sends it as written.)
    """
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "greedy"},
        "spec": {"containers": [{"name": "c", "image": "busybox", "resources": "lots"}]},
    }

    refused = crds.kubectl("create", "-n", namespace, "-f", "-", input=yaml.safe_dump(pod))

    assert refused.returncode != 0
    assert "Error from server (BadRequest)" in refused.stderr
    assert 'Pod in version "v1" cannot be handled as a Pod' in refused.stderr
    assert "spec.containers[0].resources" in refused.stderr
