"""What the kubelet does once a container's main process exits by itself (pure, no I/O).

Profiles script a pod's status while its containers run. When a main process exits on its own,
the real outcome takes over from the script, as on a node: the container is `terminated` with
its exit code (reason `Completed` for 0, else `Error`), and `restartPolicy` decides what follows:

- `Always`: restart it, whatever the exit code; `OnFailure`: restart it after a non-zero exit;
  `Never`: leave it terminated.
- The first restart is immediate; each later one waits in `waiting: CrashLoopBackOff` for a
  back-off that doubles from 10 s up to 5 min (Kubernetes' figures; the sandbox waits
  `BACKOFF_SCALE` of that, times the kubelet's time scale). `restartCount` counts restarts and
  `lastState.terminated` keeps the previous run.
- The pod stays `Running` while any container runs or will restart; once every container is
  terminated for good, the phase is `Succeeded` if all exited 0, else `Failed`.

Containers without a command have no process and never exit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

RESTART_POLICIES = ("Always", "OnFailure", "Never")
# Kubernetes' crash-loop back-off: 10 s, doubling, at most 5 min.
BACKOFF_INITIAL_SECONDS = 10.0
BACKOFF_MAX_SECONDS = 300.0
# The sandbox waits this share of Kubernetes' back-off (10 s shows as 0.5 s), like the profiles.
BACKOFF_SCALE = 0.05

RunState = Literal["running", "terminated", "backoff"]


@dataclass
class ContainerRun:
    """One container's state since its process first exited on its own."""

    name: str
    image: str
    state: RunState = "running"
    restart_count: int = 0
    started_at: str | None = None
    finished_at: str | None = None
    exit_code: int = 0
    # How many times it exited under a restarting policy: drives the back-off.
    crashes: int = 0
    last_terminated: dict[str, Any] | None = None
    container_ids: list[str] = field(default_factory=list)

    @property
    def reason(self) -> str:
        return "Completed" if self.exit_code == 0 else "Error"

    def terminated(self) -> dict[str, Any]:
        return {
            "exitCode": self.exit_code,
            "reason": self.reason,
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
            "containerID": self.container_id,
        }

    @property
    def container_id(self) -> str:
        return self.container_ids[-1] if self.container_ids else ""


def restart_policy(pod: Mapping[str, Any]) -> str:
    policy = (pod.get("spec") or {}).get("restartPolicy") or "Always"
    return str(policy) if policy in RESTART_POLICIES else "Always"


def exit_code(returncode: int) -> int:
    """A process's return code as the runtime reports it: a signal n is 128 + n."""
    return 128 - returncode if returncode < 0 else returncode


def restarts(policy: str, code: int) -> bool:
    return policy == "Always" or (policy == "OnFailure" and code != 0)


def backoff_seconds(crashes: int) -> float:
    """Kubernetes' back-off before restart number `crashes` + 1 (the first restart waits 0)."""
    if crashes <= 1:
        return 0.0
    return float(min(BACKOFF_INITIAL_SECONDS * 2.0 ** (crashes - 2), BACKOFF_MAX_SECONDS))


def describe_seconds(seconds: float) -> str:
    """Go's duration text for whole seconds: `10s`, `1m20s`, `5m0s`."""
    whole = int(seconds)
    return f"{whole // 60}m{whole % 60}s" if whole >= 60 else f"{whole}s"


def exited(run: ContainerRun, returncode: int, now: str, policy: str) -> float | None:
    """Record an exit; the Kubernetes back-off before restarting it, or None to stay down."""
    run.exit_code = exit_code(returncode)
    run.finished_at = now
    if not restarts(policy, run.exit_code):
        run.state = "terminated"
        return None
    run.crashes += 1
    run.state = "backoff"
    return backoff_seconds(run.crashes)


def restarted(run: ContainerRun, now: str, container_id: str) -> None:
    run.last_terminated = run.terminated()
    run.restart_count += 1
    run.state = "running"
    run.started_at = now
    run.finished_at = None
    run.container_ids.append(container_id)


def phase(runs: Sequence[ContainerRun]) -> str:
    if any(r.state != "terminated" for r in runs):
        return "Running"
    return "Succeeded" if all(r.exit_code == 0 for r in runs) else "Failed"


def container_status(
    run: ContainerRun, pod: Mapping[str, Any], backoff: float | None
) -> dict[str, Any]:
    metadata = pod.get("metadata") or {}
    state: dict[str, Any]
    if run.state == "running":
        state = {"running": {"startedAt": run.started_at}}
    elif run.state == "backoff" and backoff:
        pod_ref = f"{metadata.get('name')}_{metadata.get('namespace')}({metadata.get('uid')})"
        state = {
            "waiting": {
                "reason": "CrashLoopBackOff",
                "message": f"back-off {describe_seconds(backoff)} restarting failed "
                f"container={run.name} pod={pod_ref}",
            }
        }
    else:
        # Terminated for good, or for the moment before an immediate restart.
        state = {"terminated": run.terminated()}
    status: dict[str, Any] = {
        "name": run.name,
        "image": run.image,
        "imageID": f"sandbox.local/{run.image}",
        "ready": run.state == "running",
        "restartCount": run.restart_count,
        "started": run.state == "running",
        "state": state,
        "lastState": {},
    }
    if run.state == "backoff" and backoff:
        status["lastState"] = {"terminated": run.terminated()}
    elif run.last_terminated is not None:
        status["lastState"] = {"terminated": run.last_terminated}
    if "waiting" not in state:
        status["containerID"] = run.container_id
    return status


def pod_status(
    previous: Mapping[str, Any],
    pod: Mapping[str, Any],
    runs: Sequence[ContainerRun],
    backoffs: Mapping[str, float],
    now: str,
) -> dict[str, Any]:
    """The pod's status from its containers' runs, keeping what the profile had set up."""
    status = {k: v for k, v in previous.items() if k not in ("reason", "message")}
    current = phase(runs)
    status["phase"] = current
    status["containerStatuses"] = [
        container_status(r, pod, backoffs.get(r.name) if r.state == "backoff" else None)
        for r in runs
    ]
    unready = [r.name for r in runs if r.state != "running"]
    wanted: dict[str, tuple[str, str | None, str | None]]
    if current in ("Succeeded", "Failed"):
        wanted = {
            "Ready": ("False", "PodCompleted", None),
            "ContainersReady": ("False", "PodCompleted", None),
            "PodReadyToStartContainers": ("False", None, None),
        }
    elif unready:
        unready_message = f"containers with unready status: [{' '.join(unready)}]"
        wanted = {
            "Ready": ("False", "ContainersNotReady", unready_message),
            "ContainersReady": ("False", "ContainersNotReady", unready_message),
        }
    else:
        wanted = {"Ready": ("True", None, None), "ContainersReady": ("True", None, None)}
    conditions = []
    for condition in previous.get("conditions") or []:
        kind = condition.get("type")
        if kind not in wanted:
            conditions.append(condition)
            continue
        value, reason, message = wanted.pop(kind)
        changed = condition.get("status") != value
        entry: dict[str, Any] = {
            "type": kind,
            "status": value,
            "lastProbeTime": None,
            "lastTransitionTime": now if changed else condition.get("lastTransitionTime"),
        }
        if reason:
            entry["reason"] = reason
        if message:
            entry["message"] = message
        conditions.append(entry)
    for kind, (value, added_reason, added_message) in wanted.items():
        if kind == "PodReadyToStartContainers":
            continue
        entry = {"type": kind, "status": value, "lastProbeTime": None, "lastTransitionTime": now}
        if added_reason:
            entry["reason"] = added_reason
        if added_message:
            entry["message"] = added_message
        conditions.append(entry)
    status["conditions"] = conditions
    return status
