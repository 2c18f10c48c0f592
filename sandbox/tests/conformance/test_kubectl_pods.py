"""kubectl exec and logs against pods of the sandbox's simulated kubelet."""

from __future__ import annotations

import pytest
from conformance_cluster import Cluster

POD = """
apiVersion: v1
kind: Pod
metadata:
  name: worker
spec:
  containers:
    - name: main
      image: busybox:1.36
      command:
        - sh
        - -c
        - echo started main; trap 'exit 0' TERM; while true; do sleep 3600 & wait $!; done
      env:
        - name: GREETING
          value: hello from the pod spec
    - name: side
      image: busybox:1.36
      command:
        - sh
        - -c
        - echo started side; trap 'exit 0' TERM; while true; do sleep 3600 & wait $!; done
"""


@pytest.fixture
def pod(cluster: Cluster, namespace: str) -> str:
    """A running two-container pod in `namespace`; returns its name."""
    cluster.ok("apply", "-n", namespace, "-f", "-", input=POD)
    cluster.ok("wait", "-n", namespace, "--for=condition=Ready", "--timeout=60s", "pod/worker")
    return "worker"


def test_exec_returns_both_streams_and_the_exit_code(
    cluster: Cluster, namespace: str, pod: str
) -> None:
    result = cluster.kubectl(
        "exec", "-n", namespace, pod, "--", "sh", "-c", "echo out; echo err >&2; exit 3"
    )

    assert result.returncode == 3
    assert result.stdout == "out\n"
    assert "err\n" in result.stderr


def test_exec_sees_the_container_env(cluster: Cluster, namespace: str, pod: str) -> None:
    out = cluster.ok("exec", "-n", namespace, pod, "-c", "main", "--", "sh", "-c", "echo $GREETING")

    assert out == "hello from the pod spec\n"


def test_exec_runs_in_the_chosen_container(cluster: Cluster, namespace: str, pod: str) -> None:
    cluster.ok("exec", "-n", namespace, pod, "-c", "main", "--", "sh", "-c", "echo m > mark")

    in_main = cluster.kubectl("exec", "-n", namespace, pod, "-c", "main", "--", "cat", "mark")
    in_side = cluster.kubectl("exec", "-n", namespace, pod, "-c", "side", "--", "cat", "mark")

    assert (in_main.returncode, in_main.stdout) == (0, "m\n")
    assert in_side.returncode != 0


def test_exec_with_stdin(cluster: Cluster, namespace: str, pod: str) -> None:
    text = "".join(f"line {i}\n" for i in range(1000))

    out = cluster.ok(
        "exec", "-i", "-n", namespace, pod, "--", "sh", "-c", "wc -l; echo done", input=text
    )

    assert out.split() == ["1000", "done"]


def test_exec_stdin_round_trip(cluster: Cluster, namespace: str, pod: str) -> None:
    out = cluster.ok("exec", "-i", "-n", namespace, pod, "--", "cat", input="hello\nworld\n")

    assert out == "hello\nworld\n"


def test_exec_into_a_missing_pod_fails(cluster: Cluster, namespace: str) -> None:
    result = cluster.kubectl("exec", "-n", namespace, "nowhere", "--", "true")

    assert result.returncode == 1
    assert 'pods "nowhere" not found' in result.stderr


def test_logs(cluster: Cluster, namespace: str, pod: str) -> None:
    main = cluster.ok("logs", "-n", namespace, pod, "-c", "main")
    side = cluster.ok("logs", "-n", namespace, pod, "-c", "side")

    assert main == "started main\n"
    assert side == "started side\n"


def test_get_pod_shows_it_running(cluster: Cluster, namespace: str, pod: str) -> None:
    out = cluster.ok("get", "pod", pod, "-n", namespace)

    assert out.splitlines()[0].split()[:3] == ["NAME", "READY", "STATUS"]
    assert out.splitlines()[1].split()[:3] == [pod, "2/2", "Running"]


def test_delete_pod(cluster: Cluster, namespace: str, pod: str) -> None:
    out = cluster.ok("delete", "pod", pod, "-n", namespace, "--wait=true", "--timeout=30s")
    gone = cluster.kubectl("get", "pod", pod, "-n", namespace)

    assert f'pod "{pod}" deleted' in out
    assert gone.returncode == 1
