"""Decoding the protobuf bodies `kubectl create <kind>` and Helm's release storage send."""

from __future__ import annotations

import pytest

from agentpool_sandbox.errors import ApiError
from agentpool_sandbox.protobuf import MAGIC, decode


def field(number: int, payload: bytes) -> bytes:
    assert len(payload) < 128
    return bytes([number << 3 | 2, len(payload)]) + payload


def envelope(kind: str, raw: bytes) -> bytes:
    type_meta = field(1, b"v1") + field(2, kind.encode())
    return MAGIC + field(1, type_meta) + field(2, raw)


def test_decodes_a_secret_with_labels_and_binary_data() -> None:
    meta = field(1, b"s1") + field(11, field(1, b"app") + field(2, b"web"))
    secret = field(1, meta) + field(2, field(1, b"x") + field(2, b"y")) + field(3, b"Opaque")
    assert decode(envelope("Secret", secret)) == {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "s1", "labels": {"app": "web"}},
        "data": {"x": "eQ=="},
        "type": "Opaque",
    }


def test_empty_strings_are_omitted_like_go_json() -> None:
    meta = field(1, b"n1") + field(2, b"")
    assert decode(envelope("Namespace", field(1, meta))) == {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "n1"},
    }


def test_decodes_delete_options_with_preconditions_and_policy() -> None:
    preconditions = field(1, b"uid-1") + field(2, b"42")
    options = field(2, preconditions) + field(4, b"Foreground") + field(5, b"All")

    decoded = decode(envelope("DeleteOptions", options))

    assert decoded == {
        "apiVersion": "v1",
        "kind": "DeleteOptions",
        "preconditions": {"uid": "uid-1", "resourceVersion": "42"},
        "propagationPolicy": "Foreground",
        "dryRun": ["All"],
    }


def test_unknown_kinds_are_unsupported_media() -> None:
    with pytest.raises(ApiError) as info:
        decode(envelope("Deployment", b""))
    assert info.value.code == 415
