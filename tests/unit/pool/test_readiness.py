"""The readiness classifier against a table of real pod status snapshots."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agentpool.pool.readiness import AgentState, AgentStatus, classify

CREATED = datetime(2026, 11, 24, 13, 0, 0, tzinfo=UTC)
STARTUP_TIMEOUT = 300.0
PULL_GRACE = 120.0


def ts(seconds: float) -> str:
    return (CREATED + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def container_spec(name: str, *, probe: bool = False) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": name,
        "image": "jenkins/inbound-agent:3283.v92c105e0f819-1",
        "imagePullPolicy": "IfNotPresent",
        "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}},
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
    }
    if probe:
        spec["readinessProbe"] = {
            "exec": {"command": ["test", "-f", "/tmp/ready"]},
            "periodSeconds": 5,
        }
    return spec


def waiting(name: str, reason: str, message: str = "") -> dict[str, Any]:
    state: dict[str, Any] = {"reason": reason}
    if message:
        state["message"] = message
    return {
        "name": name,
        "image": "jenkins/inbound-agent:3283.v92c105e0f819-1",
        "imageID": "",
        "lastState": {},
        "ready": False,
        "restartCount": 0,
        "started": False,
        "state": {"waiting": state},
    }


def running(name: str, *, ready: bool = True, at: float = 60) -> dict[str, Any]:
    return {
        "name": name,
        "image": "docker.io/jenkins/inbound-agent:3283.v92c105e0f819-1",
        "imageID": "docker.io/jenkins/inbound-agent@sha256:5f2a0c1d9e",
        "containerID": f"containerd://{name}0123456789abcdef",
        "lastState": {},
        "ready": ready,
        "restartCount": 0,
        "started": True,
        "state": {"running": {"startedAt": ts(at)}},
    }


def terminated(name: str, *, exit_code: int, reason: str, message: str = "") -> dict[str, Any]:
    state: dict[str, Any] = {
        "exitCode": exit_code,
        "reason": reason,
        "startedAt": ts(60),
        "finishedAt": ts(89),
        "containerID": f"containerd://{name}0123456789abcdef",
    }
    if message:
        state["message"] = message
    return {
        "name": name,
        "image": "docker.io/jenkins/inbound-agent:3283.v92c105e0f819-1",
        "imageID": "docker.io/jenkins/inbound-agent@sha256:5f2a0c1d9e",
        "containerID": f"containerd://{name}0123456789abcdef",
        "lastState": {},
        "ready": False,
        "restartCount": 0,
        "started": False,
        "state": {"terminated": state},
    }


def conditions(*, scheduled: bool = True, ready: bool = False, at: float = 1) -> list[Any]:
    ready_word = "True" if ready else "False"
    items: list[dict[str, Any]] = [
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": ts(0)},
    ]
    if not scheduled:
        return [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/3 nodes are available: 1 node(s) had untolerated taint "
                "{node-role.kubernetes.io/control-plane: }, 2 Insufficient cpu. "
                "preemption: 0/3 nodes are available: 1 Preemption is not helpful for "
                "scheduling, 2 No preemption victims found for incoming pod.",
                "lastTransitionTime": ts(0),
                "lastProbeTime": None,
            }
        ]
    items += [
        {"type": "Initialized", "status": "True", "lastTransitionTime": ts(at)},
        {"type": "Ready", "status": ready_word, "lastTransitionTime": ts(at)},
        {"type": "ContainersReady", "status": ready_word, "lastTransitionTime": ts(at)},
    ]
    return items


def pod(
    phase: str,
    statuses: list[dict[str, Any]] | None,
    *,
    containers: list[dict[str, Any]] | None = None,
    conds: list[Any] | None = None,
    start_time: float | None = 1,
    **status_extra: Any,
) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase, "conditions": conds or conditions()}
    if statuses is not None:
        status["containerStatuses"] = statuses
    if start_time is not None:
        status["startTime"] = ts(start_time)
        status["hostIP"] = "10.240.0.4"
        status["podIP"] = "10.240.0.17"
    status.update(status_extra)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "ci-linux-7xk2p",
            "generateName": "ci-linux-",
            "namespace": "ci",
            "uid": "8c1d1f9e-8f1b-4d3a-9a0e-3c2b7d1e5a10",
            "resourceVersion": "48213",
            "creationTimestamp": ts(0),
            "labels": {"agentpool.dev/pool": "ci-linux", "agentpool.dev/agent": "true"},
        },
        "spec": {
            "containers": containers or [container_spec("jnlp")],
            "nodeName": "virtual-node-aci-linux",
            "restartPolicy": "Never",
        },
        "status": status,
    }


# The exact sequence of JENKINS-68649 (`kubectl get pods -w` on an ACI virtual node):
#   test22   0/1   Creating     8s
#   test22   0/1   Waiting      27s
#   test22   0/1   Waiting      53s
#   test22   1/1   Pending      73s   <- every container running, phase still Pending
#   test22   1/1   Running      78s
#   test22   0/1   Terminated   89s
SEED_CREATING = pod("Pending", [waiting("jnlp", "Creating")])
SEED_WAITING = pod("Pending", [waiting("jnlp", "Waiting")])
SEED_PENDING_RUNNING = pod("Pending", [running("jnlp", at=73)], conds=conditions(ready=True, at=73))
SEED_RUNNING = pod("Running", [running("jnlp", at=73)], conds=conditions(ready=True, at=73))
SEED_TERMINATED = pod(
    "Running", [terminated("jnlp", exit_code=0, reason="Terminated")], conds=conditions(at=89)
)


@dataclass(frozen=True)
class Case:
    pod: dict[str, Any] | None
    at: float  # seconds after creation
    on: tuple[AgentState, str]  # (state, reason) with the toleration on
    off: tuple[AgentState, str]  # ... and off


S, R, F, L = AgentState.STARTING, AgentState.READY, AgentState.FAILED, AgentState.LOST

PULL_MESSAGE = (
    'Back-off pulling image "registry.example.com/ci/agent:missing": ErrImagePull: '
    "failed to pull and unpack image: 503 Service Unavailable"
)

CASES: dict[str, Case] = {
    # The seed, step by step.
    "seed creating 8s": Case(SEED_CREATING, 8, (S, "Creating"), (S, "Creating")),
    "seed waiting 27s": Case(SEED_WAITING, 27, (S, "Waiting"), (S, "Waiting")),
    "seed waiting 53s": Case(SEED_WAITING, 53, (S, "Waiting"), (S, "Waiting")),
    "seed 1/1 pending 73s": Case(
        SEED_PENDING_RUNNING, 73, (R, "StartedWhilePending"), (F, "PodNotRunning")
    ),
    "seed running 78s": Case(SEED_RUNNING, 78, (R, "Started"), (R, "Started")),
    "seed terminated 89s": Case(
        SEED_TERMINATED, 89, (F, "ContainerTerminated"), (F, "ContainerTerminated")
    ),
    # A standard kubelet.
    "standard container creating": Case(
        pod("Pending", [waiting("jnlp", "ContainerCreating")]),
        3,
        (S, "ContainerCreating"),
        (S, "ContainerCreating"),
    ),
    "standard just created, no status": Case(
        pod("Pending", None, conds=[], start_time=None),
        0,
        (S, "ContainersNotRunning"),
        (S, "ContainersNotRunning"),
    ),
    "standard running": Case(
        pod("Running", [running("jnlp")], conds=conditions(ready=True)),
        5,
        (R, "Started"),
        (R, "Started"),
    ),
    # Registries have outages: pull errors wait out the grace.
    "ErrImagePull within grace": Case(
        pod("Pending", [waiting("jnlp", "ErrImagePull", "rpc error: 503 Service Unavailable")]),
        30,
        (S, "ErrImagePull"),
        (S, "ErrImagePull"),
    ),
    "ImagePullBackOff within grace": Case(
        pod("Pending", [waiting("jnlp", "ImagePullBackOff", PULL_MESSAGE)]),
        PULL_GRACE,  # startTime is 1s after creation: grace not yet used up
        (S, "ImagePullBackOff"),
        (S, "ImagePullBackOff"),
    ),
    "ImagePullBackOff after grace": Case(
        pod("Pending", [waiting("jnlp", "ImagePullBackOff", PULL_MESSAGE)]),
        PULL_GRACE + 1,
        (F, "ImagePullBackOff"),
        (F, "ImagePullBackOff"),
    ),
    # Broken for good: fail fast.
    "CrashLoopBackOff": Case(
        pod(
            "Running",
            [
                {
                    **waiting(
                        "jnlp",
                        "CrashLoopBackOff",
                        "back-off 10s restarting failed container=jnlp "
                        "pod=ci-linux-7xk2p_ci(8c1d1f9e-8f1b-4d3a-9a0e-3c2b7d1e5a10)",
                    ),
                    "restartCount": 2,
                    "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}},
                }
            ],
        ),
        40,
        (F, "CrashLoopBackOff"),
        (F, "CrashLoopBackOff"),
    ),
    "InvalidImageName": Case(
        pod(
            "Pending",
            [
                waiting(
                    "jnlp",
                    "InvalidImageName",
                    'Failed to apply default image tag "Jenkins/Agent:latest": couldn\'t '
                    "parse image name: invalid reference format: repository name must be "
                    "lowercase",
                )
            ],
        ),
        4,
        (F, "InvalidImageName"),
        (F, "InvalidImageName"),
    ),
    "CreateContainerConfigError": Case(
        pod(
            "Pending",
            [waiting("jnlp", "CreateContainerConfigError", 'secret "agent-secret" not found')],
        ),
        4,
        (F, "CreateContainerConfigError"),
        (F, "CreateContainerConfigError"),
    ),
    "ErrImageNeverPull": Case(
        pod(
            "Pending",
            [
                waiting(
                    "jnlp",
                    "ErrImageNeverPull",
                    'Container image "ci/agent:dev" is not present with pull policy of Never',
                )
            ],
        ),
        4,
        (F, "ErrImageNeverPull"),
        (F, "ErrImageNeverPull"),
    ),
    "container terminated with error": Case(
        pod(
            "Running",
            [terminated("jnlp", exit_code=137, reason="OOMKilled")],
        ),
        90,
        (F, "ContainerTerminated"),
        (F, "ContainerTerminated"),
    ),
    "phase Succeeded": Case(
        pod(
            "Succeeded",
            [terminated("jnlp", exit_code=0, reason="Completed")],
        ),
        90,
        (F, "PodSucceeded"),
        (F, "PodSucceeded"),
    ),
    "phase Failed, evicted": Case(
        pod(
            "Failed",
            [],
            reason="Evicted",
            message="The node was low on resource: ephemeral-storage.",
        ),
        200,
        (F, "Evicted"),
        (F, "Evicted"),
    ),
    # Waiting, but reported.
    "Unschedulable": Case(
        pod("Pending", None, conds=conditions(scheduled=False), start_time=None),
        30,
        (S, "Unschedulable"),
        (S, "Unschedulable"),
    ),
    "Unschedulable past startup timeout": Case(
        pod("Pending", None, conds=conditions(scheduled=False), start_time=None),
        STARTUP_TIMEOUT,
        (F, "StartupTimeout"),
        (F, "StartupTimeout"),
    ),
    "still creating past startup timeout": Case(
        pod("Pending", [waiting("jnlp", "ContainerCreating")]),
        STARTUP_TIMEOUT + 5,
        (F, "StartupTimeout"),
        (F, "StartupTimeout"),
    ),
    # A brief Unknown phase is not a failure.
    "Unknown after ready": Case(
        pod("Unknown", [running("jnlp")], conds=conditions(ready=True)),
        100,
        (R, "NodeUnreachable"),
        (R, "NodeUnreachable"),
    ),
    "Unknown while starting": Case(
        pod("Unknown", [waiting("jnlp", "ContainerCreating")]),
        10,
        (S, "NodeUnreachable"),
        (S, "NodeUnreachable"),
    ),
    "Unknown for long after node went silent": Case(
        pod("Unknown", [running("jnlp")], conds=conditions(ready=False, at=100)),
        100 + STARTUP_TIMEOUT,
        (L, "NodeLost"),
        (L, "NodeLost"),
    ),
    # Readiness probes are read from the container spec.
    "readiness probe not yet passing": Case(
        pod(
            "Running",
            [running("jnlp", ready=False)],
            containers=[container_spec("jnlp", probe=True)],
        ),
        20,
        (S, "ContainersNotReady"),
        (S, "ContainersNotReady"),
    ),
    "readiness probe passing": Case(
        pod(
            "Running",
            [running("jnlp", ready=True)],
            containers=[container_spec("jnlp", probe=True)],
            conds=conditions(ready=True),
        ),
        20,
        (R, "Started"),
        (R, "Started"),
    ),
    "no probe: running is enough even if not marked ready": Case(
        pod("Running", [running("jnlp", ready=False)]),
        20,
        (R, "Started"),
        (R, "Started"),
    ),
    "multi-container, one not running": Case(
        pod(
            "Pending",
            [running("jnlp"), waiting("docker", "ContainerCreating")],
            containers=[container_spec("jnlp"), container_spec("docker")],
        ),
        20,
        (S, "ContainerCreating"),
        (S, "ContainerCreating"),
    ),
    "multi-container, all running while Pending": Case(
        pod(
            "Pending",
            [running("jnlp"), running("docker")],
            containers=[container_spec("jnlp"), container_spec("docker")],
        ),
        20,
        (R, "StartedWhilePending"),
        (F, "PodNotRunning"),
    ),
    # Deletion and disappearance.
    "deletionTimestamp set": Case(
        {
            **SEED_RUNNING,
            "metadata": {
                **SEED_RUNNING["metadata"],
                "deletionTimestamp": ts(100),
                "deletionGracePeriodSeconds": 30,
            },
        },
        101,
        (L, "PodDeleting"),
        (L, "PodDeleting"),
    ),
    "vanished": Case(None, 10, (L, "PodVanished"), (L, "PodVanished")),
}


def run(case_pod: dict[str, Any] | None, at: float, *, tolerate: bool) -> AgentStatus:
    return classify(
        case_pod,
        tolerate_virtual_kubelet_pending=tolerate,
        agent_container="jnlp",
        startup_timeout=STARTUP_TIMEOUT,
        image_pull_grace=PULL_GRACE,
        now=CREATED + timedelta(seconds=at),
    )


@pytest.mark.parametrize("name", list(CASES))
def test_table_toleration_on(name: str) -> None:
    case = CASES[name]
    status = run(case.pod, case.at, tolerate=True)
    assert (status.state, status.reason) == case.on, status.message


@pytest.mark.parametrize("name", list(CASES))
def test_table_toleration_off(name: str) -> None:
    case = CASES[name]
    status = run(case.pod, case.at, tolerate=False)
    assert (status.state, status.reason) == case.off, status.message


def test_classify_does_not_mutate_the_pod() -> None:
    original = copy.deepcopy(SEED_PENDING_RUNNING)
    run(SEED_PENDING_RUNNING, 73, tolerate=True)
    assert original == SEED_PENDING_RUNNING


def test_seed_sequence_never_fails_with_toleration_on() -> None:
    sequence = [
        (SEED_CREATING, 8),
        (SEED_WAITING, 27),
        (SEED_WAITING, 53),
        (SEED_PENDING_RUNNING, 73),
        (SEED_RUNNING, 78),
    ]
    states = [run(p, at, tolerate=True).state for p, at in sequence]
    assert states == [S, S, S, R, R]


def test_seed_sequence_fails_at_the_pending_window_with_toleration_off() -> None:
    states = [
        run(p, at, tolerate=False).state
        for p, at in [(SEED_WAITING, 53), (SEED_PENDING_RUNNING, 73)]
    ]
    assert states == [S, F]


def test_pending_with_running_containers_is_flagged_for_the_metric() -> None:
    assert run(SEED_PENDING_RUNNING, 73, tolerate=True).virtual_kubelet_pending
    assert not run(SEED_RUNNING, 78, tolerate=True).virtual_kubelet_pending


def test_startup_timeout_message_says_what_it_waited_for() -> None:
    status = run(CASES["still creating past startup timeout"].pod, 305, tolerate=True)
    assert (
        status.message == "not started after 300s: containers not running: jnlp (ContainerCreating)"
    )
    assert status.waiting_on == "containers not running: jnlp (ContainerCreating)"


def test_startup_timeout_on_unschedulable_quotes_the_scheduler() -> None:
    status = run(CASES["Unschedulable"].pod, STARTUP_TIMEOUT, tolerate=True)
    assert "2 Insufficient cpu" in status.message
    assert status.waiting_on == "a node (pod not scheduled)"


def test_unschedulable_reports_the_scheduler_message_while_waiting() -> None:
    status = run(CASES["Unschedulable"].pod, 30, tolerate=True)
    assert status.message.startswith("0/3 nodes are available: 1 node(s) had untolerated taint")


def test_failure_message_carries_container_reason_and_message() -> None:
    status = run(CASES["CreateContainerConfigError"].pod, 4, tolerate=True)
    assert status.message == (
        'container jnlp: CreateContainerConfigError: secret "agent-secret" not found'
    )


def test_terminated_message_carries_exit_code() -> None:
    status = run(CASES["container terminated with error"].pod, 90, tolerate=True)
    assert status.message == "container jnlp terminated: OOMKilled (exit code 137)"


def test_agent_container_is_listed_first_in_what_it_waits_for() -> None:
    p = pod(
        "Pending",
        [waiting("docker", "ContainerCreating"), waiting("jnlp", "ContainerCreating")],
        containers=[container_spec("docker"), container_spec("jnlp")],
    )
    status = run(p, 10, tolerate=True)
    assert status.waiting_on == (
        "containers not running: jnlp (ContainerCreating), docker (ContainerCreating)"
    )


def test_missing_agent_container_fails() -> None:
    status = classify(
        SEED_RUNNING,
        tolerate_virtual_kubelet_pending=True,
        agent_container="agent",
        startup_timeout=STARTUP_TIMEOUT,
        image_pull_grace=PULL_GRACE,
        now=CREATED + timedelta(seconds=80),
    )
    assert (status.state, status.reason) == (F, "AgentContainerMissing")


def test_init_container_still_running_is_what_it_waits_for() -> None:
    p = pod(
        "Pending",
        [waiting("jnlp", "PodInitializing")],
        initContainerStatuses=[{**running("setup"), "ready": False}],
    )
    status = run(p, 10, tolerate=True)
    assert (status.state, status.waiting_on) == (S, "init containers not done: setup (Running)")


def test_failed_init_container_fails_the_agent() -> None:
    p = pod(
        "Pending",
        [waiting("jnlp", "PodInitializing")],
        initContainerStatuses=[terminated("setup", exit_code=2, reason="Error")],
    )
    assert run(p, 10, tolerate=True).reason == "InitContainerFailed"


def test_unready_after_ready_gets_a_fresh_startup_window() -> None:
    # Created long ago; the probe started failing 10 s ago.
    p = pod(
        "Running",
        [running("jnlp", ready=False)],
        containers=[container_spec("jnlp", probe=True)],
        conds=conditions(ready=False, at=5000),
    )
    assert run(p, 5010, tolerate=True).state == S
    assert run(p, 5000 + STARTUP_TIMEOUT, tolerate=True).state == F


def test_naive_now_is_taken_as_utc() -> None:
    status = classify(
        SEED_RUNNING,
        tolerate_virtual_kubelet_pending=True,
        agent_container=None,
        startup_timeout=STARTUP_TIMEOUT,
        image_pull_grace=PULL_GRACE,
        now=datetime(2026, 11, 24, 13, 1, 18),
    )
    assert status.state == R


def test_pull_grace_longer_than_startup_timeout_still_times_out() -> None:
    status = classify(
        pod("Pending", [waiting("jnlp", "ImagePullBackOff", PULL_MESSAGE)]),
        tolerate_virtual_kubelet_pending=True,
        agent_container="jnlp",
        startup_timeout=60,
        image_pull_grace=600,
        now=CREATED + timedelta(seconds=61),
    )
    assert (status.state, status.reason, status.waiting_on) == (
        F,
        "StartupTimeout",
        "image pull of container jnlp (ImagePullBackOff)",
    )


def test_pull_failure_message_quotes_the_registry_error() -> None:
    status = run(CASES["ImagePullBackOff after grace"].pod, PULL_GRACE + 1, tolerate=True)
    assert status.message.startswith(f"container jnlp: ImagePullBackOff: {PULL_MESSAGE}")
