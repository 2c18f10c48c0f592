"""OpenAPI v2 as protobuf: the gnostic `openapi.v2.Document` a real API server serves.

client-go's `OpenAPISchema()` asks `/openapi/v2` for
`application/com.github.proto-openapi.spec.v2@v1.0+protobuf` only, and kubectl needs it to
validate what OpenAPI v3 cannot describe (a `kind: List`, `explain --output=plaintext-openapiv2`).
kube-apiserver turns its JSON document into gnostic's `OpenAPIv2.proto` messages; this module does
the same for the sandbox's JSON document with hand-written field numbers, no protobuf runtime.

Values gnostic keeps as `Any` (defaults, enums, examples, `x-` vendor extensions) carry their
YAML text only, as gnostic's compiler writes them; JSON is YAML, so that text is JSON here.
Keys gnostic does not know are dropped, as its compiler would reject them.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterable, Mapping
from typing import Any

MEDIA_TYPE = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
# The older spelling client-go still asks for; kube-openapi accepts it and answers with the
# one above (`@` is no token character, so Go's mime parser rejects it in a Content-Type).
MEDIA_TYPE_DEPRECATED = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"

# --- wire format -------------------------------------------------------------------------


def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # int64: two's complement, ten bytes
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(number: int, wire: int) -> bytes:
    return _varint(number << 3 | wire)


def _bytes_field(number: int, data: bytes) -> bytes:
    return _key(number, 2) + _varint(len(data)) + data


def _string(number: int, value: Any) -> bytes:
    text = value if isinstance(value, str) else json.dumps(value)
    return _bytes_field(number, text.encode()) if text else b""


def _bool(number: int, value: Any, *, always: bool = False) -> bytes:
    flag = bool(value)
    return _key(number, 0) + _varint(int(flag)) if flag or always else b""


def _int(number: int, value: Any) -> bytes:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return b""
    return _key(number, 0) + _varint(int(value)) if int(value) else b""


def _double(number: int, value: Any) -> bytes:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return b""
    return _key(number, 1) + struct.pack("<d", float(value)) if value else b""


def _strings(number: int, values: Any) -> bytes:
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, list):
        return b""
    return b"".join(_bytes_field(number, str(v).encode()) for v in values)


def _message(number: int, data: bytes, *, always: bool = False) -> bytes:
    return _bytes_field(number, data) if data or always else b""


# --- gnostic messages --------------------------------------------------------------------


def _any(value: Any) -> bytes:
    """`Any{yaml}`: the value's YAML (here: JSON) text."""
    return _string(2, json.dumps(value, separators=(",", ":")))


def _named(number: int, name: str, value: bytes) -> bytes:
    """One entry of gnostic's ordered maps (`NamedSchema`, `NamedAny`, ...)."""
    return _bytes_field(number, _string(1, name) + _bytes_field(2, value))


def _vendor_extensions(number: int, node: Mapping[str, Any]) -> bytes:
    return b"".join(
        _named(number, key, _any(value)) for key, value in node.items() if key.startswith("x-")
    )


def _schema(node: Any) -> bytes:
    if not isinstance(node, Mapping):
        return b""
    out = bytearray()
    simple: dict[str, Callable[[Any], bytes]] = {
        "$ref": lambda v: _string(1, v),
        "format": lambda v: _string(2, v),
        "title": lambda v: _string(3, v),
        "description": lambda v: _string(4, v),
        "default": lambda v: _message(5, _any(v), always=True),
        "multipleOf": lambda v: _double(6, v),
        "maximum": lambda v: _double(7, v),
        "exclusiveMaximum": lambda v: _bool(8, v),
        "minimum": lambda v: _double(9, v),
        "exclusiveMinimum": lambda v: _bool(10, v),
        "maxLength": lambda v: _int(11, v),
        "minLength": lambda v: _int(12, v),
        "pattern": lambda v: _string(13, v),
        "maxItems": lambda v: _int(14, v),
        "minItems": lambda v: _int(15, v),
        "uniqueItems": lambda v: _bool(16, v),
        "maxProperties": lambda v: _int(17, v),
        "minProperties": lambda v: _int(18, v),
        "required": lambda v: _strings(19, v),
        "enum": lambda v: b"".join(_message(20, _any(e), always=True) for e in v or ()),
        "additionalProperties": _additional_properties,
        "type": lambda v: _message(22, _strings(1, v), always=True),
        "items": _items,
        "allOf": lambda v: b"".join(_message(24, _schema(s), always=True) for s in v or ()),
        "properties": lambda v: _message(
            25,
            b"".join(_named(1, name, _schema(sub)) for name, sub in (v or {}).items()),
            always=True,
        ),
        "discriminator": lambda v: _string(26, v),
        "readOnly": lambda v: _bool(27, v),
        "example": lambda v: _message(30, _any(v), always=True),
    }
    for key, value in node.items():
        encode = simple.get(key)
        if encode is not None:
            out += encode(value)
    out += _vendor_extensions(31, node)
    return bytes(out)


def _additional_properties(value: Any) -> bytes:
    # A oneof: `false` must be written, not omitted as a proto3 zero value would be.
    if isinstance(value, bool):
        return _message(21, _bool(2, value, always=True), always=True)
    return _message(21, _message(1, _schema(value), always=True), always=True)


def _items(value: Any) -> bytes:
    schemas = value if isinstance(value, list) else [value]
    return _message(
        23, b"".join(_message(1, _schema(s), always=True) for s in schemas), always=True
    )


# Parameter sub-schemas: field numbers of the members they share.
_NON_BODY_LOCATIONS = {"header": 1, "formData": 2, "query": 3, "path": 4}
_SUBSCHEMA_FIELDS: dict[str, dict[str, int]] = {
    # query and formData have allow_empty_value at 5, shifting the rest by one.
    "query": {"type": 6, "format": 7, "collectionFormat": 9, "uniqueItems": 20, "x": 23},
    "formData": {"type": 6, "format": 7, "collectionFormat": 9, "uniqueItems": 20, "x": 23},
    "header": {"type": 5, "format": 6, "collectionFormat": 8, "uniqueItems": 19, "x": 22},
    "path": {"type": 5, "format": 6, "collectionFormat": 8, "uniqueItems": 19, "x": 22},
}


def _parameter(node: Any) -> bytes:
    """A `ParametersItem`: a body or non-body parameter, or a `$ref`."""
    if not isinstance(node, Mapping):
        return b""
    if "$ref" in node:
        reference = _string(1, node["$ref"]) + _string(2, node.get("description", ""))
        return _message(2, reference, always=True)
    location = str(node.get("in", ""))
    if location == "body":
        body = (
            _string(1, node.get("description", ""))
            + _string(2, node.get("name", ""))
            + _string(3, location)
            + _bool(4, node.get("required"))
            + _message(5, _schema(node.get("schema") or {}), always=True)
            + _vendor_extensions(6, node)
        )
        return _message(1, _message(1, body, always=True), always=True)
    fields = _SUBSCHEMA_FIELDS.get(location)
    if fields is None:
        return b""
    sub = (
        _bool(1, node.get("required"))
        + _string(2, location)
        + _string(3, node.get("description", ""))
        + _string(4, node.get("name", ""))
        + _string(fields["type"], node.get("type", ""))
        + _string(fields["format"], node.get("format", ""))
        + _string(fields["collectionFormat"], node.get("collectionFormat", ""))
        + _bool(fields["uniqueItems"], node.get("uniqueItems"))
        + _vendor_extensions(fields["x"], node)
    )
    non_body = _message(_NON_BODY_LOCATIONS[location], sub, always=True)
    return _message(1, _message(2, non_body, always=True), always=True)


def _parameters(number: int, nodes: Any) -> bytes:
    return b"".join(_message(number, _parameter(p), always=True) for p in nodes or ())


def _responses(node: Any) -> bytes:
    out = bytearray()
    for code, response in (node or {}).items():
        if not isinstance(response, Mapping):
            continue
        if code.startswith("x-"):
            out += _named(2, code, _any(response))
            continue
        if "$ref" in response:
            value = _message(2, _string(1, response["$ref"]), always=True)
        else:
            body = _string(1, response.get("description", ""))
            if "schema" in response:
                body += _message(2, _message(1, _schema(response["schema"]), always=True))
            body += _vendor_extensions(5, response)
            value = _message(1, body, always=True)
        out += _named(1, code, value)
    return bytes(out)


def _operation(node: Any) -> bytes:
    if not isinstance(node, Mapping):
        return b""
    return (
        _strings(1, node.get("tags", []))
        + _string(2, node.get("summary", ""))
        + _string(3, node.get("description", ""))
        + _string(5, node.get("operationId", ""))
        + _strings(6, node.get("produces", []))
        + _strings(7, node.get("consumes", []))
        + _parameters(8, node.get("parameters"))
        + _message(9, _responses(node.get("responses")), always=True)
        + _strings(10, node.get("schemes", []))
        + _bool(11, node.get("deprecated"))
        + _vendor_extensions(13, node)
    )


_OPERATIONS = {"get": 2, "put": 3, "post": 4, "delete": 5, "options": 6, "head": 7, "patch": 8}


def _path_item(node: Mapping[str, Any]) -> bytes:
    out = bytearray(_string(1, node.get("$ref", "")))
    for method, number in _OPERATIONS.items():
        if method in node:
            out += _message(number, _operation(node[method]), always=True)
    out += _parameters(9, node.get("parameters"))
    out += _vendor_extensions(10, node)
    return bytes(out)


def _security_definitions(node: Mapping[str, Any]) -> bytes:
    out = bytearray()
    for name, scheme in node.items():
        if not isinstance(scheme, Mapping):
            continue
        if scheme.get("type") == "apiKey":
            api_key = (
                _string(1, "apiKey")
                + _string(2, scheme.get("name", ""))
                + _string(3, scheme.get("in", ""))
                + _string(4, scheme.get("description", ""))
                + _vendor_extensions(5, scheme)
            )
            item = _message(2, api_key, always=True)
        elif scheme.get("type") == "basic":
            basic = _string(1, "basic") + _string(2, scheme.get("description", ""))
            item = _message(1, basic, always=True)
        else:
            continue
        out += _named(1, name, item)
    return bytes(out)


def _security(requirements: Iterable[Any]) -> bytes:
    out = bytearray()
    for requirement in requirements:
        if not isinstance(requirement, Mapping):
            continue
        entries = b"".join(
            _named(1, name, _strings(1, scopes or [])) for name, scopes in requirement.items()
        )
        out += _message(12, entries, always=True)
    return bytes(out)


def encode_document(document: Mapping[str, Any]) -> bytes:
    """A Swagger 2.0 JSON document as a serialized gnostic `openapi.v2.Document`."""
    info = document.get("info") or {}
    out = bytearray(_string(1, document.get("swagger", "2.0")))
    out += _message(
        2,
        _string(1, info.get("title", ""))
        + _string(2, info.get("version", ""))
        + _string(3, info.get("description", ""))
        + _vendor_extensions(7, info),
        always=True,
    )
    out += _string(3, document.get("host", ""))
    out += _string(4, document.get("basePath", ""))
    out += _strings(5, document.get("schemes", []))
    out += _strings(6, document.get("consumes", []))
    out += _strings(7, document.get("produces", []))
    paths = document.get("paths") or {}
    out += _message(
        8,
        b"".join(_named(2, path, _path_item(item)) for path, item in paths.items()),
        always=True,
    )
    definitions = document.get("definitions") or {}
    out += _message(
        9,
        b"".join(_named(1, name, _schema(schema)) for name, schema in definitions.items()),
        always=True,
    )
    out += _security(document.get("security") or [])
    if document.get("securityDefinitions"):
        out += _message(13, _security_definitions(document["securityDefinitions"]), always=True)
    out += _vendor_extensions(16, document)
    return bytes(out)
