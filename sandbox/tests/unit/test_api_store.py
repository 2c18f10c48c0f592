"""Object semantics of the sandbox store, exercised directly (no HTTP)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sandbox_widgets import WIDGETS, widget, widget_crd

from agentpool_sandbox.errors import ApiError
from agentpool_sandbox.patching import JSON, MERGE, STRATEGIC
from agentpool_sandbox.selectors import parse_label_selector
from agentpool_sandbox.store import Store

CRDS = "customresourcedefinitions.apiextensions.k8s.io"


@pytest.fixture
def store() -> Store:
    store = Store()
    store.create(CRDS, None, widget_crd())
    return store


def pod(name: str, **labels: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "main", "image": "busybox"}]},
    }


def error_of(call: Any) -> ApiError:
    with pytest.raises(ApiError) as info:
        call()
    return info.value


def test_create_sets_uid_version_generation_and_timestamp(store: Store) -> None:
    created = store.create(WIDGETS, "default", widget("a"))
    meta = created["metadata"]
    assert meta["uid"] and meta["creationTimestamp"].endswith("Z")
    assert meta["generation"] == 1
    assert int(meta["resourceVersion"]) == int(store.resource_version)


def test_resource_versions_are_global_and_increasing(store: Store) -> None:
    first = store.create(WIDGETS, "default", widget("a"))
    second = store.create("configmaps", "default", {"metadata": {"name": "c"}})
    assert int(second["metadata"]["resourceVersion"]) > int(first["metadata"]["resourceVersion"])


def test_generate_name_appends_five_characters(store: Store) -> None:
    created = store.create(WIDGETS, "default", {"metadata": {"generateName": "w-"}, "spec": {}})
    assert created["metadata"]["name"].startswith("w-")
    assert len(created["metadata"]["name"]) == 7


def test_schema_defaults_are_applied_and_unknown_fields_pruned(store: Store) -> None:
    created = store.create(WIDGETS, "default", widget("a", bogus=True))
    assert created["spec"] == {"size": 1}


def test_namespace_mismatch_is_bad_request(store: Store) -> None:
    obj = widget("a")
    obj["metadata"]["namespace"] = "other"
    assert error_of(lambda: store.create(WIDGETS, "default", obj)).code == 400


def test_strict_create_of_a_builtin_rejects_unknown_fields(store: Store) -> None:
    typo = pod("a")
    typo["spec"]["containers"][0]["imagee"] = "busybox"

    error = error_of(lambda: store.create("pods", "default", typo, strict=True))
    store.create("pods", "default", typo)

    assert error.code == 400
    assert error.message == (
        'Pod in version "v1" cannot be handled as a Pod: strict decoding error: '
        'unknown field "spec.containers[0].imagee"'
    )


def test_strict_replace_of_a_builtin_rejects_unknown_fields(store: Store) -> None:
    created = store.create("pods", "default", pod("a"))
    created["spec"]["bogus"] = 1

    error = error_of(lambda: store.replace("pods", "default", "a", created, strict=True))

    assert error.code == 400 and 'unknown field "spec.bogus"' in error.message


def test_missing_namespace_is_not_found(store: Store) -> None:
    error = error_of(lambda: store.create(WIDGETS, "nowhere", widget("a")))
    assert (error.code, error.message) == (404, 'namespaces "nowhere" not found')


def test_duplicate_is_already_exists(store: Store) -> None:
    store.create(WIDGETS, "default", widget("a"))
    error = error_of(lambda: store.create(WIDGETS, "default", widget("a")))
    assert (error.code, error.reason) == (409, "AlreadyExists")


def test_get_missing_is_not_found_with_kubernetes_message(store: Store) -> None:
    error = error_of(lambda: store.get(WIDGETS, "default", "nope"))
    assert error.status()["message"] == 'widgets.example.dev "nope" not found'
    assert error.status()["details"] == {"name": "nope", "group": "example.dev", "kind": "widgets"}


def test_invalid_object_lists_field_causes(store: Store) -> None:
    error = error_of(lambda: store.create(WIDGETS, "default", widget("a", size=-1)))
    status = error.status()
    assert status["code"] == 422 and status["reason"] == "Invalid"
    assert status["message"].startswith('Widget.example.dev "a" is invalid: spec.size: ')
    assert [c["field"] for c in status["details"]["causes"]] == ["spec.size"]


def test_transition_rule_rejects_changing_an_immutable_field(store: Store) -> None:
    store.create(WIDGETS, "default", widget("a", serial="1"))
    error = error_of(lambda: store.patch(WIDGETS, "default", "a", MERGE, {"spec": {"serial": "2"}}))
    assert error.code == 422 and "is immutable" in error.message


def test_stale_resource_version_conflicts(store: Store) -> None:
    created = store.create(WIDGETS, "default", widget("a"))
    store.patch(WIDGETS, "default", "a", MERGE, {"spec": {"size": 2}})
    error = error_of(lambda: store.replace(WIDGETS, "default", "a", created))
    assert (error.code, error.reason) == (409, "Conflict")


def test_replace_of_custom_resource_requires_resource_version(store: Store) -> None:
    store.create(WIDGETS, "default", widget("a"))
    assert error_of(lambda: store.replace(WIDGETS, "default", "a", widget("a"))).code == 422


def test_generation_changes_with_spec_only(store: Store) -> None:
    store.create(WIDGETS, "default", widget("a"))
    labelled = store.patch(WIDGETS, "default", "a", MERGE, {"metadata": {"labels": {"x": "y"}}})
    resized = store.patch(WIDGETS, "default", "a", MERGE, {"spec": {"size": 5}})
    status = store.patch(WIDGETS, "default", "a", MERGE, {"status": {"phase": "Up"}}, "status")
    assert [o["metadata"]["generation"] for o in (labelled, resized, status)] == [1, 2, 2]


def test_main_resource_ignores_status_and_status_ignores_the_rest(store: Store) -> None:
    store.create(WIDGETS, "default", widget("a"))
    main = store.patch(WIDGETS, "default", "a", MERGE, {"status": {"phase": "Up"}})
    sub = store.patch(
        WIDGETS, "default", "a", MERGE, {"spec": {"size": 9}, "status": {"phase": "Up"}}, "status"
    )
    assert "status" not in main
    assert sub["spec"]["size"] == 1 and sub["status"] == {"phase": "Up"}


def test_noop_patch_keeps_the_resource_version(store: Store) -> None:
    created = store.create(WIDGETS, "default", widget("a", size=3))
    again = store.patch(WIDGETS, "default", "a", MERGE, {"spec": {"size": 3}})
    assert again["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]


def test_json_patch_applies_operations(store: Store) -> None:
    store.create(WIDGETS, "default", widget("a"))
    patched = store.patch(
        WIDGETS, "default", "a", JSON, [{"op": "replace", "path": "/spec/size", "value": 4}]
    )
    assert patched["spec"]["size"] == 4


def test_strategic_patch_is_unsupported_for_custom_resources(store: Store) -> None:
    store.create(WIDGETS, "default", widget("a"))
    error = error_of(lambda: store.patch(WIDGETS, "default", "a", STRATEGIC, {"spec": {}}))
    assert error.code == 415


def test_strategic_patch_merges_containers_by_name(store: Store) -> None:
    store.create("pods", "default", pod("p"))
    patch = {"spec": {"containers": [{"name": "main", "env": [{"name": "A", "value": "1"}]}]}}
    patched = store.patch("pods", "default", "p", STRATEGIC, patch)
    (container,) = patched["spec"]["containers"]
    assert container["image"] == "busybox" and container["env"] == [{"name": "A", "value": "1"}]


def test_label_selectors(store: Store) -> None:
    store.create("pods", "default", pod("a", app="web", tier="front"))
    store.create("pods", "default", pod("b", app="db"))
    store.create("pods", "default", pod("c"))

    def names(selector: str) -> list[str]:
        items, _ = store.list("pods", "default", label_selector=selector)
        return [o["metadata"]["name"] for o in items]

    assert names("app=web") == ["a"]
    assert names("app==db") == ["b"]
    assert names("app!=web") == ["b", "c"]
    assert names("app in (web,db)") == ["a", "b"]
    assert names("app notin (web)") == ["b", "c"]
    assert names("tier") == ["a"]
    assert names("!app") == ["c"]


def test_field_selectors(store: Store) -> None:
    store.create("pods", "default", pod("a"))
    store.create("pods", "kube-system", pod("b"))
    running, _ = store.list("pods", field_selector="status.phase=Running")
    not_a, _ = store.list("pods", field_selector="metadata.name!=a")
    in_default, _ = store.list("pods", field_selector="metadata.namespace=default")
    assert running == []
    assert [o["metadata"]["name"] for o in not_a] == ["b"]
    assert [o["metadata"]["name"] for o in in_default] == ["a"]


def test_unsupported_field_selector_is_bad_request(store: Store) -> None:
    assert error_of(lambda: store.list(WIDGETS, field_selector="spec.size=1")).code == 400


def test_finalizers_delay_deletion_until_removed(store: Store) -> None:
    obj = widget("a")
    obj["metadata"]["finalizers"] = ["example.dev/hold"]
    store.create(WIDGETS, "default", obj)
    deleting = store.delete(WIDGETS, "default", "a")
    assert deleting["metadata"]["deletionTimestamp"]
    store.patch(WIDGETS, "default", "a", MERGE, {"metadata": {"finalizers": None}})
    assert error_of(lambda: store.get(WIDGETS, "default", "a")).code == 404


def owned_pod(name: str, owner: dict[str, Any]) -> dict[str, Any]:
    """A pod whose owner reference names the widget `owner`."""
    dependent = pod(name)
    meta = owner["metadata"]
    ref = {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": meta["name"]}
    dependent["metadata"]["ownerReferences"] = [{**ref, "uid": meta["uid"]}]
    return dependent


def test_owner_deletion_collects_dependents(store: Store) -> None:
    owner = store.create(WIDGETS, "default", widget("owner"))
    store.create("pods", "default", owned_pod("p", owner))
    store.delete(WIDGETS, "default", "owner")
    store.collect_garbage()
    assert error_of(lambda: store.get("pods", "default", "p")).code == 404


def test_orphan_propagation_keeps_dependents(store: Store) -> None:
    owner = store.create(WIDGETS, "default", widget("owner"))
    store.create("pods", "default", owned_pod("p", owner))
    store.delete(WIDGETS, "default", "owner", propagation_policy="Orphan")
    store.collect_garbage()
    assert "ownerReferences" not in store.get("pods", "default", "p")["metadata"]


def test_foreground_deletion_waits_for_dependents(store: Store) -> None:
    owner = store.create(WIDGETS, "default", widget("owner"))
    store.create("pods", "default", owned_pod("p", owner))
    deleting = store.delete(WIDGETS, "default", "owner", propagation_policy="Foreground")
    assert deleting["metadata"]["finalizers"] == ["foregroundDeletion"]
    store.collect_garbage()
    assert error_of(lambda: store.get("pods", "default", "p")).code == 404
    assert error_of(lambda: store.get(WIDGETS, "default", "owner")).code == 404


def test_deleting_a_namespace_removes_its_contents(store: Store) -> None:
    store.create("namespaces", None, {"metadata": {"name": "team"}})
    store.create(WIDGETS, "team", widget("a"))
    store.delete("namespaces", None, "team")
    store.collect_garbage()
    assert error_of(lambda: store.get("namespaces", None, "team")).code == 404
    assert store.list(WIDGETS)[0] == []


def test_deleting_a_crd_unregisters_it_and_removes_objects(store: Store) -> None:
    store.create(WIDGETS, "default", widget("a"))
    store.delete(CRDS, None, WIDGETS)
    store.collect_garbage()
    assert not store.registry.has_key(WIDGETS)
    store.create(CRDS, None, widget_crd())
    assert store.list(WIDGETS)[0] == []


def test_crd_is_established_and_served(store: Store) -> None:
    crd = store.get(CRDS, None, WIDGETS)
    conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conditions == {"NamesAccepted": "True", "Established": "True"}
    rtype = store.registry.lookup("example.dev", "v1", "widgets")
    assert rtype is not None and rtype.short_names == ("wd",)


async def test_subscribe_replays_existing_objects_then_follows_changes(store: Store) -> None:
    store.create(WIDGETS, "default", widget("a"))
    events = store.subscribe(WIDGETS, "default")
    first = await anext(events)
    store.patch(WIDGETS, "default", "a", MERGE, {"spec": {"size": 2}})
    second = await asyncio.wait_for(anext(events), 5)
    await events.aclose()
    assert (first[0], second[0], second[1]["spec"]["size"]) == ("ADDED", "MODIFIED", 2)


def test_watch_from_an_evicted_version_is_gone() -> None:
    store = Store(history=3)
    start = store.resource_version
    for i in range(5):
        store.create("configmaps", "default", {"metadata": {"name": f"c{i}"}})
    error = error_of(lambda: store.watch("configmaps", "default", start))
    assert (error.code, error.reason) == (410, "Expired")


def test_watch_sees_objects_leave_a_selector_as_deleted(store: Store) -> None:
    store.create("pods", "default", pod("a", app="web"))
    subscription, _ = store.watch("pods", "default", store.resource_version, *_app_web())
    store.patch("pods", "default", "a", MERGE, {"metadata": {"labels": {"app": "db"}}})
    kind, event = subscription.queue.get_nowait()
    assert (kind, event.obj["metadata"]["labels"]["app"]) == ("DELETED", "db")


def _app_web() -> tuple[list[Any], list[Any]]:
    return parse_label_selector("app=web"), []


def test_update_status_bumps_version_without_validation(store: Store) -> None:
    created = store.create("pods", "default", pod("p"))
    updated = store.update_status(
        "pods", "default", "p", lambda o: o["status"].update(phase="Running")
    )
    assert updated["status"]["phase"] == "Running"
    assert int(updated["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])
