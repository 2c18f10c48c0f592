"""The one catalogue of the operator's Prometheus metrics.

Every series that describes a pool carries the label ``pool="<namespace>/<name>"``.
The operator serves :data:`REGISTRY` (not the process-global default registry) so
that what ``/metrics`` shows is exactly this catalogue; tests build a fresh
:class:`Catalogue` on their own :class:`CollectorRegistry`.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = [
    "METRICS",
    "REGISTRY",
    "Catalogue",
    "forget_pool",
    "pool_label",
]

# Quota waits are short when all is well; the tail up to minutes is what an
# operator tunes `queueTimeout` against.
QUOTA_WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
# From pod creation to "started": seconds on warm nodes, minutes with image pulls.
STARTUP_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
# The batching claim is "at most one session for a build": the interesting
# range is a handful to hundreds of steps per session.
SESSION_STEPS_BUCKETS = (1, 2, 3, 5, 10, 20, 50, 100, 200, 500, 1000)
# Dispatch latency targets are p50 < 50 ms and p99 < 250 ms.
DISPATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


def pool_label(namespace: str, name: str) -> str:
    """The value of the ``pool`` label for an AgentPool."""
    return f"{namespace}/{name}"


class Catalogue:
    """All metrics, registered on one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.api_connections_running = Gauge(
            "agentpool_api_connections_running",
            "Kubernetes API connections currently holding a slot of the pool's quota.",
            ["pool"],
            registry=registry,
        )
        self.api_connections_queued = Gauge(
            "agentpool_api_connections_queued",
            "Kubernetes API connections waiting for a slot of the pool's quota.",
            ["pool"],
            registry=registry,
        )
        self.api_connections_limit = Gauge(
            "agentpool_api_connections_limit",
            "The pool's quota of concurrent Kubernetes API connections (spec.apiConnections.max).",
            ["pool"],
            registry=registry,
        )
        self.api_connections = Counter(
            "agentpool_api_connections_total",
            "Kubernetes API connections granted a quota slot, by kind of call.",
            ["pool", "kind"],
            registry=registry,
        )
        self.api_quota_wait_seconds = Histogram(
            "agentpool_api_quota_wait_seconds",
            "Time an API connection waited in the pool's quota queue before it got a slot.",
            ["pool"],
            buckets=QUOTA_WAIT_BUCKETS,
            registry=registry,
        )
        self.api_quota_timeouts = Counter(
            "agentpool_api_quota_timeouts_total",
            "API connections that gave up waiting for a quota slot (reason ApiQuotaTimeout).",
            ["pool"],
            registry=registry,
        )
        self.agents = Gauge(
            "agentpool_agents",
            "Agent pods of the pool by state.",
            ["pool", "state"],
            registry=registry,
        )
        self.agent_launches = Counter(
            "agentpool_agent_launches_total",
            "Agent pod launches by result.",
            ["pool", "result"],
            registry=registry,
        )
        self.agent_startup_seconds = Histogram(
            "agentpool_agent_startup_seconds",
            "Time from agent pod creation until the operator considered it started.",
            ["pool"],
            buckets=STARTUP_BUCKETS,
            registry=registry,
        )
        self.agent_virtual_kubelet_pending = Counter(
            "agentpool_agent_virtual_kubelet_pending_total",
            "Launches that went through the Pending-with-running-containers window "
            "of virtual kubelets.",
            ["pool"],
            registry=registry,
        )
        self.steps = Counter(
            "agentpool_steps_total",
            "BuildSteps that reached a final phase, by phase.",
            ["pool", "phase"],
            registry=registry,
        )
        self.exec_sessions = Counter(
            "agentpool_exec_sessions_total",
            "Exec sessions (WebSocket connections) opened into agent containers.",
            ["pool"],
            registry=registry,
        )
        self.exec_sessions_open = Gauge(
            "agentpool_exec_sessions_open",
            "Exec sessions currently open.",
            ["pool"],
            registry=registry,
        )
        self.session_steps = Histogram(
            "agentpool_session_steps",
            "Steps run per exec session, observed when the session closes.",
            ["pool"],
            buckets=SESSION_STEPS_BUCKETS,
            registry=registry,
        )
        self.step_dispatch_seconds = Histogram(
            "agentpool_step_dispatch_seconds",
            "Time from BuildStep creation until its script started in the container.",
            ["pool"],
            buckets=DISPATCH_BUCKETS,
            registry=registry,
        )
        self._per_pool: tuple[Counter | Gauge | Histogram, ...] = (
            self.api_connections_running,
            self.api_connections_queued,
            self.api_connections_limit,
            self.api_connections,
            self.api_quota_wait_seconds,
            self.api_quota_timeouts,
            self.agents,
            self.agent_launches,
            self.agent_startup_seconds,
            self.agent_virtual_kubelet_pending,
            self.steps,
            self.exec_sessions,
            self.exec_sessions_open,
            self.session_steps,
            self.step_dispatch_seconds,
        )

    def forget_pool(self, pool: str) -> None:
        """Drop every series of a deleted pool so it stops being exported."""
        for metric in self._per_pool:
            metric.remove_by_labels({"pool": pool})


REGISTRY = CollectorRegistry()
METRICS = Catalogue(REGISTRY)


def forget_pool(pool: str) -> None:
    """Drop every series of a deleted pool from the operator's catalogue."""
    METRICS.forget_pool(pool)
