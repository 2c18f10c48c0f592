"""Kubernetes `Status` errors raised by the sandbox store and served by its API server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypedDict


class Cause(TypedDict):
    """One field-level reason of a failure, as in `Status.details.causes`."""

    reason: str
    message: str
    field: str


class ApiError(Exception):
    """A failed API call; `status()` renders it exactly like a Kubernetes `Status` body."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        causes: list[Cause] | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.causes = causes
        self.details = details

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        details = dict(self.details or {})
        if self.causes:
            details["causes"] = list(self.causes)
        if details:
            body["details"] = details
        return body


def _details(group: str, kind: str, name: str) -> dict[str, Any]:
    details: dict[str, Any] = {"kind": kind}
    if name:
        details["name"] = name
    if group:
        details["group"] = group
    return details


def _object_error(
    code: int,
    reason: str,
    object_id: tuple[str, str, str],
    message: Callable[[str], str],
    causes: list[Cause] | None = None,
) -> ApiError:
    """An error about one object; `message` words it around `<plural>.<group> "<name>"`."""
    group, plural, name = object_id
    qualified = f"{plural}.{group}" if group else plural
    return ApiError(
        code,
        reason,
        message(f'{qualified} "{name}"'),
        causes=causes,
        details=_details(group, plural, name),
    )


def not_found(group: str, plural: str, name: str) -> ApiError:
    return _object_error(404, "NotFound", (group, plural, name), lambda it: f"{it} not found")


def already_exists(group: str, plural: str, name: str) -> ApiError:
    return _object_error(
        409, "AlreadyExists", (group, plural, name), lambda it: f"{it} already exists"
    )


def conflict(group: str, plural: str, name: str) -> ApiError:
    return _object_error(
        409,
        "Conflict",
        (group, plural, name),
        lambda it: (
            f"Operation cannot be fulfilled on {it}: the object has been modified; "
            "please apply your changes to the latest version and try again"
        ),
    )


def invalid(group: str, kind: str, name: str, causes: list[Cause]) -> ApiError:
    """422 Invalid; the message aggregates causes the way the API server's field errors do."""
    rendered = [f"{c['field']}: {c['message']}" if c["field"] else c["message"] for c in causes]
    summary = rendered[0] if len(rendered) == 1 else "[" + ", ".join(rendered) + "]"
    return _object_error(
        422, "Invalid", (group, kind, name), lambda it: f"{it} is invalid: {summary}", causes
    )


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def method_not_allowed(
    message: str = "the server does not allow this method on the requested resource",
) -> ApiError:
    return ApiError(405, "MethodNotAllowed", message)


def unsupported_media_type(content_type: str) -> ApiError:
    del content_type  # Kubernetes does not echo it either.
    return ApiError(
        415,
        "UnsupportedMediaType",
        "the body of the request was in an unknown format - accepted media types include: "
        "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
    )


def gone(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


def forbidden(group: str, plural: str, name: str, message: str) -> ApiError:
    return _object_error(
        403, "Forbidden", (group, plural, name), lambda it: f"{it} is forbidden: {message}"
    )


def field_cause(reason: str, field: str, message: str) -> Cause:
    return Cause(reason=reason, message=message, field=field)
