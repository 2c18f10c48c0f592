"""The resource types the sandbox serves: a static table of built-ins plus those CRDs register."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class ResourceType:
    """One REST resource (`pods`, `agentpools.agentpool.dev`) at one group/version."""

    group: str
    version: str
    plural: str
    singular: str
    kind: str
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    status_subresource: bool = False
    # Kinds whose objects carry `metadata.generation` (those with a spec).
    generation: bool = True
    custom: bool = False
    # Extra fields usable in fieldSelector besides metadata.name/namespace.
    selectable_fields: tuple[str, ...] = ()
    printer_columns: tuple[dict[str, Any], ...] = field(default=(), compare=False)
    # Create-only review resources (access and identity checks) that are answered, not stored.
    review: bool = False
    # The `scale` subresource: (specReplicasPath, statusReplicasPath, labelSelectorPath).
    scale: tuple[str, str, str | None] | None = None

    @property
    def key(self) -> str:
        """The store key: the plural for core kinds, `<plural>.<group>` otherwise."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_version(self) -> str:
        return self.api_version

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def qualified_kind(self) -> str:
        """`Kind.group` as the API server names kinds in error messages."""
        return f"{self.kind}.{self.group}" if self.group else self.kind


_POD_FIELDS = (
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
)
_EVENT_FIELDS = (
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
)


# Workloads' scale: replicas, and the selector a Scale reports as a string.
_WORKLOAD_SCALE = (".spec.replicas", ".status.replicas", ".spec.selector")


def _t(
    group: str,
    version: str,
    plural: str,
    kind: str,
    *,
    namespaced: bool = True,
    short: tuple[str, ...] = (),
    categories: tuple[str, ...] = (),
    status: bool = False,
    generation: bool = True,
    fields: tuple[str, ...] = (),
    scale: bool = False,
) -> ResourceType:
    return ResourceType(
        group=group,
        version=version,
        plural=plural,
        singular=kind.lower(),
        kind=kind,
        namespaced=namespaced,
        short_names=short,
        categories=categories,
        status_subresource=status,
        generation=generation,
        selectable_fields=fields,
        scale=_WORKLOAD_SCALE if scale else None,
    )


BUILTINS: tuple[ResourceType, ...] = (
    _t(
        "",
        "v1",
        "namespaces",
        "Namespace",
        namespaced=False,
        short=("ns",),
        status=True,
        generation=False,
        fields=("status.phase",),
    ),
    _t(
        "", "v1", "pods", "Pod", short=("po",), categories=("all",), status=True, fields=_POD_FIELDS
    ),
    _t("", "v1", "events", "Event", short=("ev",), generation=False, fields=_EVENT_FIELDS),
    _t("", "v1", "configmaps", "ConfigMap", short=("cm",), generation=False),
    _t("", "v1", "secrets", "Secret", generation=False, fields=("type",)),
    _t("", "v1", "serviceaccounts", "ServiceAccount", short=("sa",), generation=False),
    _t("", "v1", "services", "Service", short=("svc",), categories=("all",), status=True),
    _t("", "v1", "endpoints", "Endpoints", short=("ep",), generation=False),
    _t("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", short=("pvc",), status=True),
    _t("", "v1", "nodes", "Node", namespaced=False, short=("no",), status=True),
    _t("", "v1", "resourcequotas", "ResourceQuota", short=("quota",), status=True),
    _t("", "v1", "limitranges", "LimitRange", short=("limits",)),
    _t(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        namespaced=False,
        short=("crd", "crds"),
        categories=("api-extensions",),
        status=True,
    ),
    _t(
        "apps",
        "v1",
        "deployments",
        "Deployment",
        short=("deploy",),
        categories=("all",),
        status=True,
        scale=True,
    ),
    _t(
        "apps",
        "v1",
        "statefulsets",
        "StatefulSet",
        short=("sts",),
        categories=("all",),
        status=True,
        scale=True,
    ),
    _t("apps", "v1", "daemonsets", "DaemonSet", short=("ds",), categories=("all",), status=True),
    _t(
        "apps",
        "v1",
        "replicasets",
        "ReplicaSet",
        short=("rs",),
        categories=("all",),
        status=True,
        scale=True,
    ),
    _t("batch", "v1", "jobs", "Job", categories=("all",), status=True),
    _t("batch", "v1", "cronjobs", "CronJob", short=("cj",), categories=("all",), status=True),
    _t("rbac.authorization.k8s.io", "v1", "roles", "Role", generation=False),
    _t("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", generation=False),
    _t(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterroles",
        "ClusterRole",
        namespaced=False,
        generation=False,
    ),
    _t(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterrolebindings",
        "ClusterRoleBinding",
        namespaced=False,
        generation=False,
    ),
    _t("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", short=("pdb",), status=True),
    _t("coordination.k8s.io", "v1", "leases", "Lease", generation=False),
    _t(
        "events.k8s.io",
        "v1",
        "events",
        "Event",
        short=("ev",),
        generation=False,
        fields=("regarding.kind", "regarding.name", "regarding.namespace", "reason", "type"),
    ),
    _t("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", short=("netpol",)),
    _t("networking.k8s.io", "v1", "ingresses", "Ingress", short=("ing",), status=True),
    _t(
        "autoscaling",
        "v2",
        "horizontalpodautoscalers",
        "HorizontalPodAutoscaler",
        short=("hpa",),
        categories=("all",),
        status=True,
    ),
    _t(
        "admissionregistration.k8s.io",
        "v1",
        "validatingwebhookconfigurations",
        "ValidatingWebhookConfiguration",
        namespaced=False,
    ),
    _t(
        "admissionregistration.k8s.io",
        "v1",
        "mutatingwebhookconfigurations",
        "MutatingWebhookConfiguration",
        namespaced=False,
    ),
    _t(
        "scheduling.k8s.io",
        "v1",
        "priorityclasses",
        "PriorityClass",
        namespaced=False,
        short=("pc",),
        generation=False,
    ),
)

REVIEWS: tuple[ResourceType, ...] = tuple(
    ResourceType(
        group=group,
        version="v1",
        plural=kind.lower() + "s",
        singular=kind.lower(),
        kind=kind,
        namespaced=False,
        generation=False,
        review=True,
    )
    for group, kind in (
        ("authorization.k8s.io", "SelfSubjectAccessReview"),
        ("authorization.k8s.io", "SelfSubjectRulesReview"),
        ("authentication.k8s.io", "SelfSubjectReview"),
    )
)

CRD_KEY = "customresourcedefinitions.apiextensions.k8s.io"
NAMESPACES_KEY = "namespaces"


def _crd_version_types(crd: dict[str, Any]) -> list[ResourceType]:
    spec = crd.get("spec", {})
    names = spec.get("names", {})
    group = spec.get("group", "")
    types = []
    for version in spec.get("versions", []):
        if not version.get("served", True):
            continue
        subresources = version.get("subresources") or {}
        selectable = tuple(
            str(f.get("jsonPath", "")).lstrip(".") for f in version.get("selectableFields") or []
        )
        types.append(
            ResourceType(
                group=group,
                version=version["name"],
                plural=names["plural"],
                singular=names.get("singular") or names["kind"].lower(),
                kind=names["kind"],
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                short_names=tuple(names.get("shortNames") or ()),
                categories=tuple(names.get("categories") or ()),
                status_subresource="status" in subresources,
                generation=True,
                custom=True,
                selectable_fields=selectable,
                printer_columns=tuple(version.get("additionalPrinterColumns") or ()),
                scale=_crd_scale(subresources.get("scale")),
            )
        )
    return types


def _crd_scale(scale: Any) -> tuple[str, str, str | None] | None:
    if not isinstance(scale, dict) or not scale.get("specReplicasPath"):
        return None
    return (
        str(scale["specReplicasPath"]),
        str(scale.get("statusReplicasPath") or ".status.replicas"),
        str(scale["labelSelectorPath"]) if scale.get("labelSelectorPath") else None,
    )


class Registry:
    """Resolves request paths to resource types; CRDs add and remove entries at run time."""

    def __init__(self) -> None:
        self._by_gvr: dict[tuple[str, str, str], ResourceType] = {}
        self._by_key: dict[str, list[ResourceType]] = {}
        for rtype in (*BUILTINS, *REVIEWS):
            self._add(rtype)

    def _add(self, rtype: ResourceType) -> None:
        self._by_gvr[(rtype.group, rtype.version, rtype.plural)] = rtype
        self._by_key.setdefault(rtype.key, []).append(rtype)

    def register_crd(self, crd: dict[str, Any]) -> list[ResourceType]:
        """(Re)register every served version of a CRD; returns the new types."""
        types = _crd_version_types(crd)
        if types:
            self.unregister(types[0].key)
        for rtype in types:
            self._add(rtype)
        return types

    def unregister(self, key: str) -> None:
        for rtype in self._by_key.pop(key, []):
            self._by_gvr.pop((rtype.group, rtype.version, rtype.plural), None)

    def lookup(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._by_gvr.get((group, version, plural))

    def by_key(self, key: str) -> ResourceType | None:
        """The storage type of a key: its first (preferred) served version."""
        types = self._by_key.get(key)
        return types[0] if types else None

    def has_key(self, key: str) -> bool:
        return key in self._by_key

    def all(self) -> list[ResourceType]:
        return list(self._by_gvr.values())

    def group_versions(self) -> dict[str, list[str]]:
        """group -> served versions, in registration order (the first is preferred)."""
        result: dict[str, list[str]] = {}
        for group, version, _ in self._by_gvr:
            versions = result.setdefault(group, [])
            if version not in versions:
                versions.append(version)
        return result

    def in_group_version(self, group: str, version: str) -> list[ResourceType]:
        return [t for (g, v, _), t in self._by_gvr.items() if g == group and v == version]
