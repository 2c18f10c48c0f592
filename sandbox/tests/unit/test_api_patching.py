"""Patch semantics: JSON merge patch and strategic merge patch directives."""

from __future__ import annotations

from agentpool_sandbox.patching import merge_patch, schema_for, strategic_merge_patch

POD = schema_for("", "v1", "Pod")


def test_merge_patch_replaces_lists_and_null_deletes() -> None:
    merged = merge_patch({"a": {"b": 1, "c": 2}, "l": [1, 2]}, {"a": {"b": None}, "l": [3]})
    assert merged == {"a": {"c": 2}, "l": [3]}


def test_strategic_patch_merges_env_by_name_and_keeps_others() -> None:
    pod = {"spec": {"containers": [{"name": "c", "env": [{"name": "A", "value": "1"}]}]}}
    patch = {"spec": {"containers": [{"name": "c", "env": [{"name": "B", "value": "2"}]}]}}
    merged = strategic_merge_patch(pod, patch, POD)
    assert merged["spec"]["containers"][0]["env"] == [
        {"name": "A", "value": "1"},
        {"name": "B", "value": "2"},
    ]


def test_strategic_patch_delete_directive_removes_list_element() -> None:
    pod = {"spec": {"containers": [{"name": "a"}, {"name": "b"}]}}
    patch = {"spec": {"containers": [{"name": "a", "$patch": "delete"}]}}
    assert strategic_merge_patch(pod, patch, POD)["spec"]["containers"] == [{"name": "b"}]


def test_strategic_patch_treats_finalizers_as_a_set() -> None:
    pod = {"metadata": {"finalizers": ["x"]}}
    merged = strategic_merge_patch(pod, {"metadata": {"finalizers": ["x", "y"]}}, POD)
    assert merged["metadata"]["finalizers"] == ["x", "y"]


def test_strategic_patch_merges_conditions_by_type() -> None:
    pod = {"status": {"conditions": [{"type": "Ready", "status": "False"}, {"type": "X"}]}}
    patch = {"status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    merged = strategic_merge_patch(pod, patch, POD)
    assert merged["status"]["conditions"] == [{"type": "Ready", "status": "True"}, {"type": "X"}]


def test_strategic_patch_honours_set_element_order_and_delete_from_primitive_list() -> None:
    pod = {
        "metadata": {"finalizers": ["a", "b"]},
        "spec": {"containers": [{"name": "a"}, {"name": "b"}]},
    }
    patch = {
        "metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]},
        "spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}]},
    }
    merged = strategic_merge_patch(pod, patch, POD)
    assert merged["metadata"]["finalizers"] == ["b"]
    assert [c["name"] for c in merged["spec"]["containers"]] == ["b", "a"]


def test_strategic_patch_replaces_lists_without_merge_strategy() -> None:
    pod = {"spec": {"containers": [{"name": "c", "args": ["1", "2"]}]}}
    patch = {"spec": {"containers": [{"name": "c", "args": ["3"]}]}}
    assert strategic_merge_patch(pod, patch, POD)["spec"]["containers"][0]["args"] == ["3"]
