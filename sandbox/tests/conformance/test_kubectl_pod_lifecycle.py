"""kubectl watching simulated pod lifecycles, following logs, and copying files with `cp`."""

from __future__ import annotations

import subprocess
from pathlib import Path

from conformance_cluster import Cluster, LineReader

VIRTUAL_POD = """
apiVersion: v1
kind: Pod
metadata:
  name: aci
  annotations:
    sandbox.agentpool.dev/profile: virtual-kubelet
spec:
  containers:
    - name: main
      image: busybox:1.36
      command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 3600 & wait $!; done"]
"""

TICKING_POD = """
apiVersion: v1
kind: Pod
metadata:
  name: ticker
spec:
  containers:
    - name: main
      image: busybox:1.36
      command: ["sh", "-c", "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.1; done"]
"""


def watch(cluster: Cluster, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [cluster.kubectl_path, f"--kubeconfig={cluster.kubeconfig}", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_watch_a_virtual_kubelet_pod_start(cluster: Cluster, namespace: str) -> None:
    watcher = watch(cluster, "get", "pods", "-n", namespace, "--watch")
    try:
        lines = LineReader(watcher.stdout)  # type: ignore[arg-type]
        cluster.ok("apply", "-n", namespace, "-f", "-", input=VIRTUAL_POD)

        creating = lines.wait_for("aci", "0/1", "Creating")
        waiting = lines.wait_for("aci", "0/1", "Waiting")
        running = lines.wait_for("aci", "1/1", "Running")
    finally:
        watcher.kill()
        watcher.wait()

    assert lines.seen.index(creating) < lines.seen.index(waiting) < lines.seen.index(running)


def test_logs_follow_sees_new_output(cluster: Cluster, namespace: str) -> None:
    cluster.ok("apply", "-n", namespace, "-f", "-", input=TICKING_POD)
    cluster.ok("wait", "-n", namespace, "--for=condition=Ready", "--timeout=60s", "pod/ticker")
    follower = watch(cluster, "logs", "-f", "-n", namespace, "ticker")
    try:
        lines = LineReader(follower.stdout)  # type: ignore[arg-type]

        lines.wait_for("tick 0")
        lines.wait_for("tick 5")
    finally:
        follower.kill()
        follower.wait()

    assert lines.seen[:6] == [f"tick {i}" for i in range(6)]


def test_logs_tail(cluster: Cluster, namespace: str) -> None:
    cluster.ok("apply", "-n", namespace, "-f", "-", input=TICKING_POD)
    cluster.ok("wait", "-n", namespace, "--for=condition=Ready", "--timeout=60s", "pod/ticker")
    follower = watch(cluster, "logs", "-f", "-n", namespace, "ticker")
    try:
        LineReader(follower.stdout).wait_for("tick 3")  # type: ignore[arg-type]
    finally:
        follower.kill()
        follower.wait()

    out = cluster.ok("logs", "--tail=2", "-n", namespace, "ticker")

    assert len(out.splitlines()) == 2
    assert all(line.startswith("tick ") for line in out.splitlines())


def test_cp_into_and_out_of_a_pod(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    cluster.ok("apply", "-n", namespace, "-f", "-", input=VIRTUAL_POD)
    cluster.ok("wait", "-n", namespace, "--for=condition=Ready", "--timeout=60s", "pod/aci")
    source = tmp_path / "notes.txt"
    source.write_text("copied in\n")

    cluster.ok("cp", str(source), f"{namespace}/aci:notes.txt")
    inside = cluster.ok("exec", "-n", namespace, "aci", "--", "cat", "notes.txt")
    cluster.ok("cp", f"{namespace}/aci:notes.txt", str(tmp_path / "back.txt"))

    assert inside == "copied in\n"
    assert (tmp_path / "back.txt").read_text() == "copied in\n"
