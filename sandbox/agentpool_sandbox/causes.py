"""Field causes worded the way a Kubernetes API server words them (apimachinery field errors)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from agentpool_sandbox.errors import Cause

__all__ = ["Cause", "PathPart", "field_path", "json_type", "shown_value"]


PathPart = str | int


def field_path(parts: Sequence[PathPart]) -> str:
    """Render `["spec", "env", 1, "name"]` as `spec.env[1].name`, like `field.Path.String()`."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out = f"{out}.{part}" if out else part
    return out


def shown_value(value: Any) -> str:
    """Format a bad value the way `field.Error.ErrorBody` does: strings quoted, scalars bare."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value) if isinstance(value, float) and not value.is_integer() else str(value)
    if isinstance(value, str):
        return json.dumps(value)
    # Go prints composite values with %#v; JSON is the readable equivalent.
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def json_type(value: Any) -> str:
    """The JSON type name Kubernetes shows for a value of the wrong type."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "integer" if value.is_integer() else "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def required(field: str, detail: str = "") -> Cause:
    message = "Required value" + (f": {detail}" if detail else "")
    return Cause(reason="FieldValueRequired", message=message, field=field)


def invalid(field: str, value: Any, detail: str) -> Cause:
    message = f"Invalid value: {shown_value(value)}" + (f": {detail}" if detail else "")
    return Cause(reason="FieldValueInvalid", message=message, field=field)


def type_invalid(field: str, value: Any, detail: str) -> Cause:
    message = f"Invalid value: {shown_value(value)}: {detail}"
    return Cause(reason="FieldValueTypeInvalid", message=message, field=field)


def not_supported(field: str, value: Any, supported: Sequence[Any]) -> Cause:
    listed = ", ".join(shown_value(v) for v in supported)
    message = f"Unsupported value: {shown_value(value)}: supported values: {listed}"
    return Cause(reason="FieldValueNotSupported", message=message, field=field)


def duplicate(field: str, value: Any) -> Cause:
    return Cause(
        reason="FieldValueDuplicate", message=f"Duplicate value: {shown_value(value)}", field=field
    )


def too_many(field: str, actual: int, limit: int) -> Cause:
    message = f"Too many: {actual}: must have at most {limit} items"
    return Cause(reason="FieldValueTooMany", message=message, field=field)


def too_long(field: str, limit: int) -> Cause:
    message = f"Too long: may not be more than {limit} bytes"
    return Cause(reason="FieldValueTooLong", message=message, field=field)


def forbidden(field: str, detail: str) -> Cause:
    return Cause(reason="FieldValueForbidden", message=f"Forbidden: {detail}", field=field)
