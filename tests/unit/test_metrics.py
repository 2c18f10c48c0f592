"""The metrics catalogue: names, help texts, and forgetting a deleted pool."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from agentpool.metrics import METRICS, REGISTRY, Catalogue, pool_label

REQUIRED = {
    "agentpool_api_connections_running",
    "agentpool_api_connections_queued",
    "agentpool_api_connections_limit",
    "agentpool_api_quota_wait_seconds",
    "agentpool_api_quota_timeouts",
    "agentpool_agents",
    "agentpool_agent_launches",
    "agentpool_agent_startup_seconds",
    "agentpool_agent_virtual_kubelet_pending",
    "agentpool_steps",
    "agentpool_exec_sessions",
    "agentpool_session_steps",
    "agentpool_step_dispatch_seconds",
}


def test_catalogue_has_every_required_metric_with_help() -> None:
    families = {family.name: family for family in Catalogue(CollectorRegistry()).registry.collect()}
    assert set(families) >= REQUIRED
    assert all(family.documentation for family in families.values())


def test_operator_registry_holds_only_the_catalogue() -> None:
    names = {family.name for family in REGISTRY.collect()}
    assert names and all(name.startswith("agentpool_") for name in names)
    assert METRICS.registry is REGISTRY


def test_forget_pool_drops_only_that_pools_series() -> None:
    metrics = Catalogue(CollectorRegistry())
    gone, kept = pool_label("ns", "gone"), pool_label("ns", "kept")
    for pool in (gone, kept):
        metrics.agents.labels(pool=pool, state="idle").set(2)
        metrics.steps.labels(pool=pool, phase="Succeeded").inc()
        metrics.step_dispatch_seconds.labels(pool=pool).observe(0.02)
    metrics.forget_pool(gone)
    text = generate_latest(metrics.registry).decode()
    assert 'pool="ns/gone"' not in text
    assert 'agentpool_agents{pool="ns/kept",state="idle"} 2.0' in text
    assert 'agentpool_steps_total{phase="Succeeded",pool="ns/kept"} 1.0' in text
