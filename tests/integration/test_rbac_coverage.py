"""The chart's RBAC proven against behaviour: every request the operator sends is allowed.

The operator runs in-process on the sandbox through a realistic workload (a pool warms
agents, a build of two BuildSteps runs over exec, the pool scales down and is deleted, and
the operator's recorder repeats an Event, which patches its count). An
audit middleware on the sandbox's API records every request; the requests of the operator's
clients (User-Agent ``agentpool-operator/…`` and kopf's ``kopf/…``) are resolved into
Kubernetes request attributes and checked against the RBAC objects the real Helm engine
renders (cluster-wide, namespaced, and both with kopf peering), with a small authorizer that
follows the RBAC rule matching of the Kubernetes API server.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import helm_python as helm
import pytest
import yaml
from aiohttp import web
from cluster_crds import install_crds
from kubernetes_asyncio.client import ApiClient, ApiextensionsV1Api, CustomObjectsApi
from kubernetes_asyncio.client.exceptions import ApiException

from agentpool.config import Config
from agentpool.kube import client as kube
from agentpool.kube.events import NORMAL, EventRecorder, ObjectRef
from agentpool_sandbox.cluster import Sandbox
from agentpool_sandbox.stats import resource_path

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "default"  # the namespace of the shared `operator_config`
CHART_DIR = ROOT / "charts" / "agentpool-operator"
RELEASE = "ap"
RELEASE_NAMESPACE = "agentpool-system"
SERVICE_ACCOUNT = f"{RELEASE}-agentpool-operator"
OPERATOR_CLIENTS = ("agentpool-operator/", "kopf/")
POOL = "rbac"
# The default `system:discovery` ClusterRole grants these to every authenticated user.
DISCOVERY_URLS = ("/api", "/api/*", "/apis", "/apis/*", "/version", "/openapi", "/openapi/*")
SECRET_VERBS = ("get", "list", "watch", "create", "update", "patch", "delete")
WORKLOAD_WITHIN = 40.0

# The shared fixtures' types (tests/integration/conftest.py), which tests do not import.
RunningOperator = Any
StartOperator = Callable[..., Awaitable[Any]]


@pytest.fixture
def sandbox_time_scale() -> float:
    return 0.2


# --- what the API server would make of a request ------------------------------------------


@dataclass(frozen=True, order=True)
class Request:
    """Kubernetes request attributes, as the API server's RequestInfoResolver derives them."""

    verb: str
    group: str
    resource: str
    subresource: str
    namespace: str
    name: str = ""
    path: str = ""  # only for non-resource requests

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        return (self.verb, self.group, self.resource, self.subresource, self.namespace)


def resolve(method: str, path: str, query: dict[str, str]) -> Request:
    located = resource_path(path, query)
    if located is None:
        return Request(method.lower(), "", "", "", "", path=path)
    group, rest, watch = located.group, list(located.segments), located.watch
    namespace = ""
    if rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        # /api/v1/namespaces/<ns> is the namespace object itself, not a path prefix.
        rest = rest[2:] if len(rest) > 2 else ["namespaces", namespace]
        if rest[0] == "namespaces":
            namespace = ""
    resource, name, subresource = rest[0], *[*rest[1:3], "", ""][:2]
    if method == "GET":
        verb = "watch" if watch else ("get" if name else "list")
    else:
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method, "")
        if method == "DELETE":
            verb = "delete" if name else "deletecollection"
    return Request(verb, group, resource, subresource, namespace, name)


# --- what the chart grants ----------------------------------------------------------------


def render_chart(values: dict[str, Any]) -> list[dict[str, Any]]:
    with helm.Chart.load(CHART_DIR) as chart:
        manifests = chart.render(
            values=values, name=RELEASE, namespace=RELEASE_NAMESPACE, is_install=True
        )
    return [
        doc
        for path, text in manifests.items()
        if not path.endswith("NOTES.txt")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


def _matches(values: list[str], wanted: str) -> bool:
    return "*" in values or wanted in values


def _rule_allows(rule: dict[str, Any], request: Request) -> bool:
    resource = (
        f"{request.resource}/{request.subresource}" if request.subresource else (request.resource)
    )
    resources: list[str] = rule.get("resources", [])
    resource_ok = (
        "*" in resources
        or resource in resources
        or (bool(request.subresource) and f"*/{request.subresource}" in resources)
    )
    names: list[str] = rule.get("resourceNames") or []
    return (
        _matches(rule.get("apiGroups", []), request.group)
        and resource_ok
        and _matches(rule.get("verbs", []), request.verb)
        and (not names or request.name in names)
    )


class Authorizer:
    """RBAC as the API server evaluates it, for one ServiceAccount and a set of objects."""

    def __init__(self, objects: list[dict[str, Any]], account: str, namespace: str) -> None:
        subject = {"kind": "ServiceAccount", "name": account, "namespace": namespace}
        roles = {
            (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o
            for o in objects
            if o["kind"] in ("Role", "ClusterRole")
        }
        # (namespace or "" for everywhere) -> rules
        self.rules: list[tuple[str, dict[str, Any]]] = []
        for binding in objects:
            if binding["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
                continue
            if subject not in binding["subjects"]:
                continue
            ref = binding["roleRef"]
            scope = binding["metadata"].get("namespace", "")
            role_namespace = scope if ref["kind"] == "Role" else ""
            role = roles[(ref["kind"], role_namespace, ref["name"])]
            self.rules.extend((scope, rule) for rule in role["rules"])

    def allows(self, request: Request) -> bool:
        return any(
            (not scope or scope == request.namespace) and _rule_allows(rule, request)
            for scope, rule in self.rules
        )


def is_discovery(request: Request) -> bool:
    return any(
        request.path == url or (url.endswith("/*") and request.path.startswith(url[:-1]))
        for url in DISCOVERY_URLS
    )


# --- the audited sandbox ------------------------------------------------------------------


@dataclass(frozen=True)
class Audited:
    client: str
    method: str
    path: str
    query: tuple[tuple[str, str], ...]


@pytest.fixture
async def audit_log() -> list[Audited]:
    return []


@pytest.fixture
async def cluster(
    tmp_path: Path, sandbox_time_scale: float, audit_log: list[Audited]
) -> AsyncIterator[Sandbox]:
    """The shared `cluster`, plus an audit middleware that sees every request first."""
    sandbox = Sandbox(state_dir=tmp_path / "sandbox", time_scale=sandbox_time_scale)

    @web.middleware
    async def audit(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if not request.path.startswith("/sandbox/"):
            audit_log.append(
                Audited(
                    request.headers.get("User-Agent", ""),
                    request.method,
                    request.path,
                    tuple(request.query.items()),
                )
            )
        return await handler(request)

    sandbox.app.middlewares.append(audit)
    async with sandbox:
        await install_crds(sandbox.kubeconfig_path)
        yield sandbox


def operator_requests(log: list[Audited]) -> list[Request]:
    return [
        resolve(entry.method, entry.path, dict(entry.query))
        for entry in log
        if entry.client.startswith(OPERATOR_CLIENTS)
    ]


# --- the workload -------------------------------------------------------------------------


def pool_body() -> dict[str, Any]:
    pool: dict[str, Any] = yaml.safe_load((ROOT / "examples" / "agentpool.yaml").read_text())
    pool["metadata"] = {"name": POOL, "namespace": NAMESPACE}
    pool["spec"]["template"]["metadata"]["annotations"] = {
        "sandbox.agentpool.dev/profile": "standard"
    }
    pool["spec"].update(minIdle=1, maxAgents=2)
    return pool


def step_body(name: str, order: int, script: str) -> dict[str, Any]:
    return {
        "apiVersion": "agentpool.dev/v1alpha1",
        "kind": "BuildStep",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"pool": POOL, "build": "rbac-build", "order": order, "script": script},
    }


async def run_workload(api: ApiClient, until: Callable[..., Awaitable[Any]]) -> None:
    """A pool warms an agent, steps run (when the engine is wired), the pool shrinks and goes."""
    objects = CustomObjectsApi(api)

    async def ready() -> bool:
        pool = await objects.get_namespaced_custom_object(
            kube.GROUP, kube.VERSION, NAMESPACE, kube.AGENTPOOLS, POOL
        )
        conditions = (pool.get("status") or {}).get("conditions") or []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    async def agents() -> list[dict[str, Any]]:
        return await kube.list_pods(api, NAMESPACE, f"agentpool.dev/pool={POOL}")

    async def steps_done() -> dict[str, str] | None:
        listing = await objects.list_namespaced_custom_object(
            kube.GROUP, kube.VERSION, NAMESPACE, kube.BUILDSTEPS
        )
        phases = {
            s["metadata"]["name"]: (s.get("status") or {}).get("phase") for s in listing["items"]
        }
        final = all(p in ("Succeeded", "Failed", "Skipped") for p in phases.values())
        return phases if final else None

    await objects.create_namespaced_custom_object(
        kube.GROUP, kube.VERSION, NAMESPACE, kube.AGENTPOOLS, pool_body()
    )
    await until(ready, WORKLOAD_WITHIN, "the pool to be Ready")
    for order, script in enumerate(["echo checkout", "echo build >&2; exit 3"], start=1):
        await objects.create_namespaced_custom_object(
            kube.GROUP,
            kube.VERSION,
            NAMESPACE,
            kube.BUILDSTEPS,
            step_body(f"s{order}", order, script),
        )
    phases = await until(steps_done, WORKLOAD_WITHIN, "the BuildSteps to finish")
    assert phases == {"s1": "Succeeded", "s2": "Failed"}
    patch = {"spec": {"minIdle": 0, "idleTimeout": "1s"}}
    await objects.patch_namespaced_custom_object(
        kube.GROUP,
        kube.VERSION,
        NAMESPACE,
        kube.AGENTPOOLS,
        POOL,
        patch,
        _content_type="application/merge-patch+json",
    )

    async def reaped() -> bool:
        return not await agents()

    await until(reaped, WORKLOAD_WITHIN, "the idle agent to be reaped")
    await objects.delete_namespaced_custom_object(
        kube.GROUP, kube.VERSION, NAMESPACE, kube.AGENTPOOLS, POOL
    )


async def repeat_an_event(events: EventRecorder) -> None:
    """The same Event twice through the operator's recorder: the repeat patches its count."""
    pool = ObjectRef(f"{kube.GROUP}/{kube.VERSION}", "AgentPool", NAMESPACE, POOL)
    for _ in range(2):
        events.record(pool, NORMAL, "RbacCheck", "recorded twice")
        await events.flush()


@dataclass(frozen=True)
class Mode:
    """How the chart is configured, and the operator started to match it."""

    namespaces: tuple[str, ...]
    values: dict[str, Any]

    @property
    def peered(self) -> bool:
        return int(self.values.get("replicaCount", 1)) > 1


MODES = {
    "cluster-wide": Mode((), {}),
    "namespaced": Mode((NAMESPACE,), {"watchNamespaces": [NAMESPACE]}),
    "cluster-wide-peered": Mode((), {"replicaCount": 2}),
    "namespaced-peered": Mode((NAMESPACE,), {"watchNamespaces": [NAMESPACE], "replicaCount": 2}),
}
# Granted for code paths this workload does not reach; anything else granted must be used.
NOT_EXERCISED = {
    ("", "pods/exec", "create"): "WebSocket upgrades on Kubernetes 1.35+, and SPDY exec",
    # Exercised by tests/integration/steps/test_steps_lost_agent_e2e.py and
    # test_steps_retention_e2e.py, outside this workload.
    ("", "pods", "get"): "confirming that an agent whose exec fails is gone",
    ("agentpool.dev", "buildsteps", "delete"): "ttlSecondsAfterFinished",
}
# kopf peers through whichever of its two groups has CRDs in the cluster (both, if both do).
NOT_EXERCISED.update(
    {
        ("zalando.org", resource, verb): "kopf's legacy peering group"
        for resource in ("clusterkopfpeerings", "kopfpeerings")
        for verb in ("list", "watch", "patch")
    }
)


PeeringCrd = Callable[[str, str, str], dict[str, Any]]


@pytest.fixture
def peering_crd(pytestconfig: pytest.Config) -> PeeringCrd:
    """The shared conftest's `peering_crd`: pytest imports conftests itself, tests cannot."""
    shared = pytestconfig.pluginmanager.get_plugin(str(Path(__file__).with_name("conftest.py")))
    crd: PeeringCrd = shared.peering_crd
    return crd


async def install_peering(
    api: ApiClient,
    chart_objects: list[dict[str, Any]],
    until: Callable[..., Awaitable[Any]],
    peering_crd: PeeringCrd,
) -> None:
    """kopf's peering CRDs (a prerequisite), then the peering objects the chart renders."""
    extensions = ApiextensionsV1Api(api)
    for kind, scope in (("ClusterKopfPeering", "Cluster"), ("KopfPeering", "Namespaced")):
        await extensions.create_custom_resource_definition(peering_crd(kind, scope, "kopf.dev"))
    objects = CustomObjectsApi(api)

    async def served() -> bool:
        try:
            await objects.list_cluster_custom_object("kopf.dev", "v1", "kopfpeerings")
        except ApiException:
            return False
        return True

    await until(served, 10.0, "the peering CRDs to be served")
    for obj in chart_objects:
        if obj["kind"] == "ClusterKopfPeering":
            await objects.create_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", obj)
        elif obj["kind"] == "KopfPeering":
            namespace = obj["metadata"]["namespace"]
            await objects.create_namespaced_custom_object(
                "kopf.dev", "v1", namespace, "kopfpeerings", obj
            )


@dataclass
class Run:
    requests: list[Request]
    chart_objects: list[dict[str, Any]]
    audited_by_client: Counter[str]
    counted_by_client: Counter[str]


AuditedRun = Callable[[Mode], Awaitable[Run]]


@pytest.fixture
def audited_run(
    *,
    operator_config: Config,
    start_operator: StartOperator,
    kube_api: ApiClient,
    cluster: Sandbox,
    audit_log: list[Audited],
    until: Callable[..., Awaitable[Any]],
    peering_crd: PeeringCrd,
) -> AuditedRun:
    """Render the chart for `mode`, run the workload under a matching operator, audit it."""

    async def run(mode: Mode) -> Run:
        chart_objects = render_chart(mode.values)
        config = dataclasses.replace(operator_config, namespaces=mode.namespaces)
        if mode.peered:
            await install_peering(kube_api, chart_objects, until, peering_crd)
            config = dataclasses.replace(config, standalone=False, peering_name=SERVICE_ACCOUNT)
        op: RunningOperator = await start_operator(config)
        await run_workload(kube_api, until)
        await op.call(lambda: repeat_an_event(op.runtime.events))
        await op.stop()
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{cluster.url}/sandbox/v1/stats") as response,
        ):
            stats = await response.json()
        counted = Counter(
            {
                client: totals["total"]
                for client, totals in stats["requests"]["byClient"].items()
                if client.startswith(OPERATOR_CLIENTS)
            }
        )
        audited = Counter(e.client for e in audit_log if e.client.startswith(OPERATOR_CLIENTS))
        return Run(operator_requests(audit_log), chart_objects, audited, counted)

    return run


def grants(authorizer: Authorizer) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for _, rule in authorizer.rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


@pytest.mark.parametrize("mode", MODES.values(), ids=MODES.keys())
async def test_chart_rbac_allows_every_request_the_operator_makes(
    mode: Mode, audited_run: AuditedRun
) -> None:
    run = await audited_run(mode)

    authorizer = Authorizer(run.chart_objects, SERVICE_ACCOUNT, RELEASE_NAMESPACE)
    resource_requests = {r for r in run.requests if not r.path}
    assert sorted(r for r in resource_requests if not authorizer.allows(r)) == []
    assert [r.path for r in run.requests if r.path and not is_discovery(r)] == []
    for verb in SECRET_VERBS:
        assert not authorizer.allows(Request(verb, "", "secrets", "", NAMESPACE, "any"))
        assert not authorizer.allows(Request(verb, "", "secrets", "", "kube-system", "any"))
    used = {
        (r.group, f"{r.resource}/{r.subresource}" if r.subresource else r.resource, r.verb)
        for r in resource_requests
    }
    assert {("", "pods", "create"), ("", "pods", "delete"), ("", "pods/exec", "get")} <= used
    if mode.peered:
        peerings = "kopfpeerings" if mode.namespaces else "clusterkopfpeerings"
        assert {("kopf.dev", peerings, "watch"), ("kopf.dev", peerings, "patch")} <= used
    assert {("", "events", "create"), ("", "events", "patch")} <= used
    assert sorted(grants(authorizer) - used - NOT_EXERCISED.keys()) == [], "granted, never used"
    # The audit saw exactly what the sandbox counted for the operator's clients.
    assert run.audited_by_client == run.counted_by_client
    assert {c.split("/")[0] for c in run.counted_by_client} == {"agentpool-operator", "kopf"}


def test_resolver_follows_the_api_servers_request_info() -> None:
    cases = {
        ("GET", "/api/v1/namespaces/d/pods/p/exec", ()): ("get", "", "pods", "exec", "d"),
        ("POST", "/api/v1/namespaces/d/pods/p/exec", ()): ("create", "", "pods", "exec", "d"),
        ("GET", "/api/v1/pods", (("watch", "true"),)): ("watch", "", "pods", "", ""),
        ("GET", "/api/v1/watch/namespaces/d/pods", ()): ("watch", "", "pods", "", "d"),
        ("PATCH", "/apis/agentpool.dev/v1alpha1/namespaces/d/agentpools/x/status", ()): (
            "patch",
            "agentpool.dev",
            "agentpools",
            "status",
            "d",
        ),
        ("GET", "/api/v1/namespaces", (("watch", "1"),)): ("watch", "", "namespaces", "", ""),
        ("GET", "/api/v1/namespaces/d", ()): ("get", "", "namespaces", "", ""),
        ("DELETE", "/api/v1/namespaces/d/pods", ()): ("deletecollection", "", "pods", "", "d"),
    }
    for (method, path, query), expected in cases.items():
        assert resolve(method, path, dict(query)).key == expected, path
