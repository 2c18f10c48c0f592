"""ObjectMeta rules every API object shares: name formats, label syntax, the known field set."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Literal

from agentpool_sandbox import causes
from agentpool_sandbox.causes import Cause

# Fields of metav1.ObjectMeta; the API server drops anything else when it decodes metadata.
OBJECT_META_FIELDS = frozenset(
    {
        "name",
        "generateName",
        "namespace",
        "selfLink",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "labels",
        "annotations",
        "ownerReferences",
        "finalizers",
        "managedFields",
    }
)

NameRule = Literal["subdomain", "label", "dns1035"]

_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_SUBDOMAIN = _LABEL + r"(\." + _LABEL + r")*"
_DNS1035 = r"[a-z]([-a-z0-9]*[a-z0-9])?"
_QUALIFIED_NAME = r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_LABEL_VALUE = r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?"

_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used "
    f"for validation is '{_SUBDOMAIN}')"
)
_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and "
    "must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex "
    f"used for validation is '{_LABEL}')"
)
_DNS1035_MSG = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
    "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or "
    f"'abc-123', regex used for validation is '{_DNS1035}')"
)
_QUALIFIED_NAME_MSG = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
    "with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used "
    f"for validation is '{_QUALIFIED_NAME}')"
)
_LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or "
    f"'my_value',  or '12345', regex used for validation is '{_LABEL_VALUE}')"
)


def _format_errors(value: str, pattern: str, message: str, limit: int) -> list[str]:
    errors = []
    if len(value) > limit:
        errors.append(f"must be no more than {limit} characters")
    if not re.fullmatch(pattern, value):
        errors.append(message)
    return errors


def dns_subdomain_errors(value: str) -> list[str]:
    return _format_errors(value, _SUBDOMAIN, _SUBDOMAIN_MSG, 253)


def dns_label_errors(value: str) -> list[str]:
    return _format_errors(value, _LABEL, _LABEL_MSG, 63)


def dns1035_label_errors(value: str) -> list[str]:
    return _format_errors(value, _DNS1035, _DNS1035_MSG, 63)


_NAME_CHECKS: dict[NameRule, Callable[[str], list[str]]] = {
    "subdomain": dns_subdomain_errors,
    "label": dns_label_errors,
    "dns1035": dns1035_label_errors,
}


def qualified_name_errors(value: str) -> list[str]:
    """Label and annotation keys: optional DNS-subdomain prefix, `/`, a 63-character name."""
    prefix, slash, name = value.rpartition("/")
    errors: list[str] = []
    if slash:
        if not prefix:
            errors.append("prefix part must be non-empty")
        else:
            errors.extend("prefix part " + e for e in dns_subdomain_errors(prefix))
    if not name:
        errors.append("name part must be non-empty")
        return errors
    if len(name) > 63:
        errors.append("name part must be no more than 63 characters")
    if not re.fullmatch(_QUALIFIED_NAME, name):
        errors.append(_QUALIFIED_NAME_MSG)
    return errors


def label_value_errors(value: str) -> list[str]:
    return _format_errors(value, _LABEL_VALUE, _LABEL_VALUE_MSG, 63)


def validate_object_meta(
    meta: Any, *, name_rule: NameRule = "subdomain", path: str = "metadata"
) -> list[Cause]:
    """Check name/generateName and label syntax the way `ValidateObjectMeta` does."""
    if not isinstance(meta, dict):
        return (
            [causes.required(path)]
            if meta is None
            else [
                causes.type_invalid(path, causes.json_type(meta), f"{path} must be of type object")
            ]
        )
    found: list[Cause] = []
    name, generate_name = meta.get("name"), meta.get("generateName")
    check = _NAME_CHECKS[name_rule]
    if not name and not generate_name:
        found.append(causes.required(f"{path}.name", "name or generateName is required"))
    if isinstance(name, str) and name:
        found.extend(causes.invalid(f"{path}.name", name, msg) for msg in check(name))
    if isinstance(generate_name, str) and generate_name:
        # A prefix may end in '-': the random suffix completes it.
        masked = generate_name[:-1] + "a" if generate_name.endswith("-") else generate_name
        found.extend(
            causes.invalid(f"{path}.generateName", generate_name, msg) for msg in check(masked)
        )
    labels = meta.get("labels")
    if isinstance(labels, dict):
        for key, value in labels.items():
            found.extend(
                causes.invalid(f"{path}.labels", key, msg) for msg in qualified_name_errors(key)
            )
            if isinstance(value, str):
                found.extend(
                    causes.invalid(f"{path}.labels", value, msg)
                    for msg in label_value_errors(value)
                )
    annotations = meta.get("annotations")
    if isinstance(annotations, dict):
        for key in annotations:
            found.extend(
                causes.invalid(f"{path}.annotations", key, msg)
                for msg in qualified_name_errors(key.lower())
            )
    return found


def prune_object_meta(meta: Any) -> Any:
    """Keep only ObjectMeta's own fields, as decoding into metav1.ObjectMeta does."""
    if not isinstance(meta, dict):
        return meta
    return {k: v for k, v in meta.items() if k in OBJECT_META_FIELDS}
