"""kubectl as people use it every day: run-to-completion pods, waits, patches, scale, describe."""

from __future__ import annotations

import json
import subprocess

import yaml
from conformance_cluster import ROOT, Cluster, LineReader

WAIT = "--timeout=60s"
JSON_PATCH = json.dumps(
    [{"op": "add", "path": "/data/b", "value": "2"}, {"op": "remove", "path": "/data/a"}]
)
NEW_IMAGE = {"name": "web", "image": "nginx:2"}
DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: nginx:1.27}]}
"""


def test_a_pod_that_runs_to_completion(cluster: Cluster, namespace: str) -> None:
    cluster.ok(
        "run", "once", "-n", namespace, "--image=busybox", "--restart=Never",
        "--command", "--", "sh", "-c", "echo computed 42",
    )  # fmt: skip
    cluster.ok(
        "wait", "-n", namespace, "--for=jsonpath={.status.phase}=Succeeded", WAIT, "pod/once"
    )

    logs = cluster.ok("logs", "-n", namespace, "once")
    state = json.loads(
        cluster.ok(
            "get",
            "pod",
            "once",
            "-n",
            namespace,
            "-o",
            "jsonpath={.status.containerStatuses[0].state.terminated}",
        )
    )
    listed = cluster.ok("get", "pod", "once", "-n", namespace)
    described = cluster.ok("describe", "pod", "once", "-n", namespace)

    assert logs == "computed 42\n"
    assert (state["exitCode"], state["reason"]) == (0, "Completed")
    assert "Completed" in listed
    assert "Terminated" in described and "Exit Code:    0" in described


def test_a_failing_pod_without_restarts_is_failed(cluster: Cluster, namespace: str) -> None:
    cluster.ok(
        "run", "broken", "-n", namespace, "--image=busybox", "--restart=Never",
        "--command", "--", "sh", "-c", "echo oops >&2; exit 7",
    )  # fmt: skip
    cluster.ok("wait", "-n", namespace, "--for=jsonpath={.status.phase}=Failed", WAIT, "pod/broken")

    code = cluster.ok(
        "get", "pod", "broken", "-n", namespace,
        "-o", "jsonpath={.status.containerStatuses[0].state.terminated.exitCode}",
    )  # fmt: skip
    finished = cluster.ok(
        "get", "pods", "-n", namespace, "--field-selector=status.phase==Failed", "-o", "name"
    )

    assert code == "7"
    assert finished.split() == ["pod/broken"]


def test_a_crashing_pod_backs_off_and_keeps_its_previous_log(
    cluster: Cluster, namespace: str
) -> None:
    cluster.ok(
        "run", "crashy", "-n", namespace, "--image=busybox",
        "--command", "--", "sh", "-c", "echo attempt; exit 1",
    )  # fmt: skip
    cluster.ok(
        "wait", "-n", namespace, WAIT,
        "--for=jsonpath={.status.containerStatuses[0].state.waiting.reason}=CrashLoopBackOff",
        "pod/crashy",
    )  # fmt: skip

    listed = cluster.ok("get", "pod", "crashy", "-n", namespace)
    previous = cluster.ok("logs", "-n", namespace, "crashy", "--previous")
    restarts = cluster.ok(
        "get", "pod", "crashy", "-n", namespace,
        "-o", "jsonpath={.status.containerStatuses[0].restartCount}",
    )  # fmt: skip

    assert "CrashLoopBackOff" in listed
    assert previous == "attempt\n"
    assert int(restarts) >= 1


def test_patch_types_on_builtin_and_custom_objects(crds: Cluster, namespace: str) -> None:
    crds.ok("create", "configmap", "cfg", "-n", namespace, "--from-literal=a=1")
    crds.ok("apply", "-n", namespace, "-f", str(ROOT / "examples" / "agentpool.yaml"))

    crds.ok(
        "patch", "configmap", "cfg", "-n", namespace, "--type=json",
        "-p", JSON_PATCH,
    )  # fmt: skip
    crds.ok("patch", "configmap", "cfg", "-n", namespace, "-p", '{"data": {"c": "3"}}')
    crds.ok(
        "patch", "agentpool", "demo", "-n", namespace, "--type=json",
        "-p", '[{"op": "replace", "path": "/spec/maxAgents", "value": 4}]',
    )  # fmt: skip
    refused = crds.kubectl(
        "patch", "agentpool", "demo", "-n", namespace, "-p", '{"spec": {"maxAgents": 5}}'
    )

    data = json.loads(crds.ok("get", "cm", "cfg", "-n", namespace, "-o", "jsonpath={.data}"))
    pool = yaml.safe_load(crds.ok("get", "ap", "demo", "-n", namespace, "-o", "yaml"))
    assert data == {"b": "2", "c": "3"}
    assert (pool["spec"]["maxAgents"], pool["metadata"]["generation"]) == (4, 2)
    # Custom resources take no strategic merge patch, kubectl's default type.
    assert refused.returncode != 0
    assert "application/strategic-merge-patch+json is not supported" in refused.stderr


def test_strategic_patch_merges_containers_by_name(cluster: Cluster, namespace: str) -> None:
    cluster.ok(
        "apply", "-n", namespace, "-f", "-", input=DEPLOYMENT.replace("replicas: 1", "replicas: 2")
    )
    cluster.ok(
        "patch", "deployment", "web", "-n", namespace, "--type=strategic",
        "-p", json.dumps({"spec": {"template": {"spec": {"containers": [NEW_IMAGE]}}}}),
    )  # fmt: skip
    cluster.ok("set", "env", "deployment/web", "-n", namespace, "MODE=fast")

    containers = json.loads(
        cluster.ok(
            "get",
            "deploy",
            "web",
            "-n",
            namespace,
            "-o",
            "jsonpath={.spec.template.spec.containers}",
        )
    )

    assert len(containers) == 1
    assert containers[0]["image"] == "nginx:2"
    assert containers[0]["env"] == [{"name": "MODE", "value": "fast"}]


def test_scale_a_deployment(cluster: Cluster, namespace: str) -> None:
    cluster.ok("apply", "-n", namespace, "-f", "-", input=DEPLOYMENT)

    cluster.ok("scale", "deployment", "web", "-n", namespace, "--replicas=3")
    guarded = cluster.kubectl(
        "scale", "deployment", "web", "-n", namespace, "--replicas=5", "--current-replicas=1"
    )
    scale = json.loads(
        cluster.ok("get", "--raw", f"/apis/apps/v1/namespaces/{namespace}/deployments/web/scale")
    )

    assert guarded.returncode != 0 and "Expected replicas to be 1, was 3" in guarded.stderr
    assert (scale["kind"], scale["spec"]["replicas"]) == ("Scale", 3)
    assert scale["status"]["selector"] == "app=web"


def test_delete_waits_for_finalizers(cluster: Cluster, namespace: str) -> None:
    held = (
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: held, finalizers: [example.dev/hold]}\n"
    )
    cluster.ok("apply", "-n", namespace, "-f", "-", input=held)

    cluster.ok("delete", "configmap", "held", "-n", namespace, "--wait=false")
    timed_out = cluster.kubectl(
        "delete", "configmap", "held", "-n", namespace, "--wait=true", "--timeout=1s"
    )
    cluster.ok(
        "patch", "configmap", "held", "-n", namespace, "--type=merge",
        "-p", '{"metadata": {"finalizers": null}}',
    )  # fmt: skip
    cluster.ok("wait", "-n", namespace, "--for=delete", "configmap/held", "--timeout=10s")

    assert timed_out.returncode != 0
    assert cluster.kubectl("get", "configmap", "held", "-n", namespace).returncode != 0


def test_get_yaml_round_trips_through_replace(crds: Cluster, namespace: str) -> None:
    crds.ok("apply", "-n", namespace, "-f", str(ROOT / "examples" / "agentpool.yaml"))
    pool = yaml.safe_load(crds.ok("get", "agentpool", "demo", "-n", namespace, "-o", "yaml"))
    pool["spec"]["minIdle"] = 2

    crds.ok("replace", "-n", namespace, "-f", "-", input=yaml.safe_dump(pool))

    assert crds.ok("get", "ap", "demo", "-n", namespace, "-o", "jsonpath={.spec.minIdle}") == "2"


def test_explain_a_custom_resource_field_and_recursively(crds: Cluster) -> None:
    spec = crds.ok("explain", "buildstep.spec")
    recursive = crds.ok("explain", "buildstep.spec", "--recursive")

    assert "KIND:       BuildStep" in spec and "FIELD: spec <Object>" in spec
    assert "script\t<string> -required-" in spec
    assert "  env\t<[]Object>" in recursive and "    name\t<string> -required-" in recursive


def test_output_formats_people_script_with(crds: Cluster, namespace: str) -> None:
    crds.ok("apply", "-n", namespace, "-f", str(ROOT / "examples" / "build-hello.yaml"))

    ordered = crds.ok("get", "bs", "-n", namespace, "--sort-by=.spec.order", "-o", "name")
    template = crds.ok(
        "get", "bs", "-n", namespace, "-o", "go-template={{range .items}}{{.spec.order}} {{end}}"
    )
    columns = crds.ok(
        "get", "bs", "-n", namespace, "-o", "custom-columns=NAME:.metadata.name,POOL:.spec.pool"
    )

    assert ordered.split() == [
        "buildstep.agentpool.dev/hello-checkout",
        "buildstep.agentpool.dev/hello-build",
        "buildstep.agentpool.dev/hello-test",
    ]
    assert sorted(template.split()) == ["1", "2", "3"]
    assert columns.splitlines()[0].split() == ["NAME", "POOL"]


def test_run_interactively_streams_output_and_exit_code(cluster: Cluster, namespace: str) -> None:
    """`kubectl run -i --rm`: attach relays the output; the exit code comes from the pod."""
    result = cluster.kubectl(
        "run", "oneshot", "-n", namespace, "-i", "--rm", "--restart=Never", "--image=busybox",
        "--command", "--", "sh", "-c", "echo first; sleep 1; echo later; exit 3",
    )  # fmt: skip

    assert result.returncode == 3
    assert result.stdout.splitlines()[:2] == ["first", "later"]
    assert "couldn't attach" not in result.stderr
    assert cluster.kubectl("get", "pod", "oneshot", "-n", namespace).returncode != 0


def test_attach_to_a_running_container(cluster: Cluster, namespace: str) -> None:
    cluster.ok(
        "run", "ticker", "-n", namespace, "--image=busybox", "--command", "--",
        "sh", "-c", "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.1; done",
    )  # fmt: skip
    cluster.ok("wait", "-n", namespace, "--for=condition=Ready", WAIT, "pod/ticker")

    with subprocess.Popen(
        [cluster.kubectl_path, f"--kubeconfig={cluster.kubeconfig}", "attach", "-n", namespace,
         "ticker"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as attached:  # fmt: skip
        assert attached.stdout is not None
        lines = LineReader(attached.stdout)
        first = lines.wait_for("tick")
        second = lines.wait_for("tick")
        attached.terminate()

    assert int(second.split()[1]) == int(first.split()[1]) + 1
