"""Decoding the Kubernetes protobuf request bodies kubectl's typed commands send.

`kubectl create namespace|configmap|secret|serviceaccount` post protobuf (`k8s\\0` + a
`runtime.Unknown` envelope) and do not fall back to JSON; Helm's Secret release storage deletes
with a protobuf `DeleteOptions`. The sandbox decodes those kinds with hand-written field
tables; other kinds answer 415.
"""

from __future__ import annotations

import base64
from typing import Any

from agentpool_sandbox.errors import ApiError

MAGIC = b"k8s\x00"

# A field table maps a field number to (JSON name, kind); kinds are "string", "bytes",
# "varint", "bool", a nested table name, "map:<value kind>" or "list:<kind>".
Table = dict[int, tuple[str, str]]

TABLES: dict[str, Table] = {
    "TypeMeta": {1: ("apiVersion", "string"), 2: ("kind", "string")},
    "Unknown": {
        1: ("typeMeta", "TypeMeta"),
        2: ("raw", "bytes"),
        3: ("contentEncoding", "string"),
        4: ("contentType", "string"),
    },
    "ObjectMeta": {
        1: ("name", "string"),
        2: ("generateName", "string"),
        3: ("namespace", "string"),
        5: ("uid", "string"),
        6: ("resourceVersion", "string"),
        11: ("labels", "map:string"),
        12: ("annotations", "map:string"),
        13: ("ownerReferences", "list:OwnerReference"),
        14: ("finalizers", "list:string"),
    },
    "OwnerReference": {
        1: ("kind", "string"),
        3: ("name", "string"),
        4: ("uid", "string"),
        5: ("apiVersion", "string"),
        6: ("controller", "bool"),
        7: ("blockOwnerDeletion", "bool"),
    },
    "ConfigMap": {
        1: ("metadata", "ObjectMeta"),
        2: ("data", "map:string"),
        3: ("binaryData", "map:bytes"),
        4: ("immutable", "bool"),
    },
    "Secret": {
        1: ("metadata", "ObjectMeta"),
        2: ("data", "map:bytes"),
        3: ("type", "string"),
        4: ("stringData", "map:string"),
        5: ("immutable", "bool"),
    },
    "Namespace": {1: ("metadata", "ObjectMeta"), 2: ("spec", "NamespaceSpec")},
    "NamespaceSpec": {1: ("finalizers", "list:string")},
    "ServiceAccount": {
        1: ("metadata", "ObjectMeta"),
        2: ("secrets", "list:ObjectReference"),
        3: ("imagePullSecrets", "list:LocalObjectReference"),
        4: ("automountServiceAccountToken", "bool"),
    },
    "ObjectReference": {
        1: ("kind", "string"),
        2: ("namespace", "string"),
        3: ("name", "string"),
        4: ("uid", "string"),
        5: ("apiVersion", "string"),
    },
    "LocalObjectReference": {1: ("name", "string")},
    # Helm's release storage deletes its Secrets with a protobuf DeleteOptions body.
    "DeleteOptions": {
        1: ("gracePeriodSeconds", "varint"),
        2: ("preconditions", "Preconditions"),
        3: ("orphanDependents", "bool"),
        4: ("propagationPolicy", "string"),
        5: ("dryRun", "list:string"),
    },
    "Preconditions": {1: ("uid", "string"), 2: ("resourceVersion", "string")},
}
_NOT_TOP_LEVEL = ("Unknown", "TypeMeta", "ObjectMeta", "Preconditions")
_MAP_ENTRY: Table = {1: ("key", "string"), 2: ("value", "raw")}


def _varint(data: bytes, position: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if position >= len(data):
            raise ValueError("truncated varint")
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7


def fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) pairs: ints for varints, bytes for length-delimited fields."""
    fields: list[tuple[int, int | bytes]] = []
    position = 0
    while position < len(data):
        key, position = _varint(data, position)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, position = _varint(data, position)
            fields.append((number, value))
        elif wire == 2:
            length, position = _varint(data, position)
            fields.append((number, data[position : position + length]))
            position += length
        elif wire == 1:
            position += 8
        elif wire == 5:
            position += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
    return fields


def _scalar(kind: str, value: int | bytes) -> Any:
    if kind == "string":
        return value.decode() if isinstance(value, bytes) else str(value)
    if kind == "bytes":
        return base64.b64encode(value).decode() if isinstance(value, bytes) else ""
    if kind == "bool":
        return bool(value)
    if kind == "varint":
        return value
    if not isinstance(value, bytes):
        raise ValueError(f"expected a message for {kind}")
    return decode_message(value, kind)


def decode_message(data: bytes, table_name: str) -> dict[str, Any]:
    table = TABLES[table_name]
    result: dict[str, Any] = {}
    for number, value in fields(data):
        if number not in table:
            continue  # fields the sandbox ignores anyway (timestamps, managedFields)
        name, kind = table[number]
        if kind.startswith("map:"):
            entry = dict(fields(value if isinstance(value, bytes) else b""))
            key = _scalar("string", entry.get(1, b""))
            result.setdefault(name, {})[key] = _scalar(kind[4:], entry.get(2, b""))
        elif kind.startswith("list:"):
            result.setdefault(name, []).append(_scalar(kind[5:], value))
        else:
            decoded = _scalar(kind, value)
            # Go's JSON omits zero values (`omitempty`); so does the sandbox.
            if decoded not in ("", False, {}):
                result[name] = decoded
    return result


def decode(body: bytes) -> dict[str, Any]:
    """A protobuf request body as the JSON object it stands for; 415 for unknown kinds."""
    if not body.startswith(MAGIC):
        raise ApiError(415, "UnsupportedMediaType", "protobuf body without the k8s envelope")
    try:
        envelope = decode_message(body[len(MAGIC) :], "Unknown")
        type_meta = envelope.get("typeMeta", {})
        kind = type_meta.get("kind", "")
        if kind not in TABLES or kind in _NOT_TOP_LEVEL:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"the sandbox decodes protobuf only for ConfigMap, Secret, Namespace, "
                f"ServiceAccount and DeleteOptions; send {kind or 'this object'} as JSON",
            )
        raw = base64.b64decode(envelope.get("raw", ""))
        obj = decode_message(raw, kind)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "BadRequest", f"cannot decode the protobuf body: {exc}") from exc
    return {"apiVersion": type_meta.get("apiVersion", "v1"), "kind": kind, **obj}
