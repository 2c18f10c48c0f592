"""Operator-wide settings of pool controllers."""

from __future__ import annotations

from dataclasses import dataclass, field

from agentpool.kube.backoff import BackoffPolicy

__all__ = ["ControllerSettings"]


@dataclass(frozen=True)
class ControllerSettings:
    """Operator-wide knobs of pool controllers (seconds)."""

    image_pull_grace: float = 60.0
    # At most one status write per pool per interval: many pod events, few writes.
    status_interval: float = 0.25
    # A launch counts as a success once the agent stayed ready this long.
    stable_after: float = 10.0
    # Launch failures in a row before creations are held, and the hold's growth.
    backoff_after: int = 3
    backoff_base: float = 5.0
    backoff_max: float = 300.0
    # Failed API calls of a pool (pod create/delete, the pod list, status writes, the
    # reconcile pass itself): 0.1 s doubling up to 30 s, with jitter; Retry-After is a floor.
    api_backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    # A kind of failure that keeps repeating is logged (and reported as an Event) once,
    # then at most once per this many seconds, with the count.
    failure_report_interval: float = 30.0
    # A full re-list catches pods whose deletion the watch missed.
    resync_interval: float = 300.0
    # Re-check a pool whose API connections are in use, so its status does not go stale.
    connections_refresh: float = 1.0

    @property
    def launch_backoff(self) -> BackoffPolicy:
        """The hold after `backoff_after` launch failures in a row, doubling per failure."""
        return BackoffPolicy(base=self.backoff_base, cap=self.backoff_max)
