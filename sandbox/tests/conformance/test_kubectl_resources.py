"""kubectl against the sandbox: CRDs, examples, printer columns, patch, delete, watch, explain."""

from __future__ import annotations

import json
import subprocess

import yaml
from conformance_cluster import ROOT, Cluster, LineReader

BUILDSTEP = """
apiVersion: agentpool.dev/v1alpha1
kind: BuildStep
metadata:
  name: {name}
spec:
  pool: demo
  build: watched
  script: echo hi
"""


def header(table: str) -> list[str]:
    return table.splitlines()[0].split()


def row(table: str, name: str) -> list[str]:
    [line] = [line for line in table.splitlines() if line.split()[0] == name]
    return line.split()


def test_crds_apply_and_become_established(crds: Cluster) -> None:
    out = crds.ok("get", "crd", "-o", "name")

    assert "customresourcedefinition.apiextensions.k8s.io/agentpools.agentpool.dev" in out
    assert "customresourcedefinition.apiextensions.k8s.io/buildsteps.agentpool.dev" in out


def test_crds_reapply_unchanged(crds: Cluster) -> None:
    out = crds.ok("apply", "-f", str(ROOT / "crds"))

    assert "agentpools.agentpool.dev unchanged" in out
    assert "buildsteps.agentpool.dev unchanged" in out


def test_api_resources_show_short_names_and_category(crds: Cluster) -> None:
    out = crds.ok("api-resources", "--api-group=agentpool.dev", "-o", "wide")

    assert row(out, "agentpools")[1:5] == ["ap", "agentpool.dev/v1alpha1", "true", "AgentPool"]
    assert row(out, "buildsteps")[1:5] == ["bs", "agentpool.dev/v1alpha1", "true", "BuildStep"]
    assert "ci" in row(out, "buildsteps")


def test_examples_apply(crds: Cluster, namespace: str) -> None:
    out = crds.ok("apply", "-n", namespace, "-f", str(ROOT / "examples"))

    assert "agentpool.agentpool.dev/demo created" in out
    assert "buildstep.agentpool.dev/release-test created" in out
    assert "buildstep.agentpool.dev/hello-build created" in out


def test_get_shows_printer_columns(crds: Cluster, namespace: str) -> None:
    crds.ok("apply", "-n", namespace, "-f", str(ROOT / "examples"))

    # BUILD shows status.build, which the operator writes; no operator runs here.
    status = '{"status": {"build": "release", "phase": "Queued"}}'
    crds.ok("patch", "bs", "release-test", "-n", namespace, "--subresource=status",
            "--type=merge", "-p", status)  # fmt: skip
    pools = crds.ok("get", "ap", "-n", namespace)
    steps = crds.ok("get", "bs", "-n", namespace)

    assert header(pools) == ["NAME", "READY", "IDLE", "BUSY", "STARTING", "QUEUED", "API", "AGE"]
    assert header(steps) == ["NAME", "POOL", "BUILD", "PHASE", "EXIT", "AGENT", "AGE"]
    assert row(steps, "release-test")[1:4] == ["demo", "release", "Queued"]


def test_get_category_lists_both_kinds(crds: Cluster, namespace: str) -> None:
    crds.ok("apply", "-n", namespace, "-f", str(ROOT / "examples"))

    out = crds.ok("get", "ci", "-n", namespace, "-o", "name")

    assert "agentpool.agentpool.dev/demo" in out.splitlines()
    assert "buildstep.agentpool.dev/lint-report" in out.splitlines()


def test_get_yaml_shows_defaults_and_server_fields(crds: Cluster, namespace: str) -> None:
    crds.ok("apply", "-n", namespace, "-f", str(ROOT / "examples"))

    pool = yaml.safe_load(crds.ok("get", "ap", "demo", "-n", namespace, "-o", "yaml"))
    step = yaml.safe_load(crds.ok("get", "bs", "hello-test", "-n", namespace, "-o", "yaml"))

    assert pool["metadata"]["uid"]
    assert pool["metadata"]["generation"] == 1
    assert pool["metadata"]["namespace"] == namespace
    assert pool["spec"]["sessions"] == {
        "batchWindow": "50ms",
        "detachAfter": "2s",
        "maxSteps": 100,
        "linger": "2s",
        "pollInterval": "2s",
    }
    assert pool["spec"]["readiness"] == {"tolerateVirtualKubeletPending": True}
    assert pool["spec"]["apiConnections"] == {"max": 8, "queueTimeout": "30s"}
    assert (step["spec"]["shell"], step["spec"]["retries"]) == ("/bin/sh", 1)
    assert (step["spec"]["runPolicy"], step["spec"]["timeout"]) == ("OnSuccess", "2m")


def test_patch_spec_bumps_generation(crds: Cluster, namespace: str) -> None:
    crds.ok("apply", "-n", namespace, "-f", str(ROOT / "examples" / "agentpool.yaml"))

    crds.ok(
        "patch", "ap", "demo", "-n", namespace, "--type=merge", "-p", '{"spec":{"maxAgents":5}}'
    )
    pool = json.loads(crds.ok("get", "ap", "demo", "-n", namespace, "-o", "json"))

    assert pool["spec"]["maxAgents"] == 5
    assert pool["metadata"]["generation"] == 2


def test_patch_status_fills_printer_columns(crds: Cluster, namespace: str) -> None:
    crds.ok("apply", "-n", namespace, "-f", str(ROOT / "examples" / "agentpool.yaml"))
    status = {
        "status": {
            "agents": {"starting": 1, "idle": 2, "busy": 3, "failed": 0, "total": 6},
            "steps": {"queued": 4, "running": 3},
            "apiConnections": {"running": 3, "queued": 0, "limit": 8, "summary": "3/8"},
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "AgentsAvailable",
                    "message": "",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            ],
        }
    }

    crds.ok(
        "patch", "ap", "demo", "-n", namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps(status),
    )  # fmt: skip
    out = crds.ok("get", "ap", "demo", "-n", namespace)
    pool = json.loads(crds.ok("get", "ap", "demo", "-n", namespace, "-o", "json"))

    assert row(out, "demo")[1:7] == ["True", "2", "3", "1", "4", "3/8"]
    assert pool["metadata"]["generation"] == 1


def test_patch_status_through_the_main_resource_is_ignored(crds: Cluster, namespace: str) -> None:
    crds.ok("apply", "-n", namespace, "-f", str(ROOT / "examples" / "agentpool.yaml"))

    crds.ok(
        "patch", "ap", "demo", "-n", namespace, "--type=merge",
        "-p", '{"status":{"agents":{"idle":9}}}',
    )  # fmt: skip
    pool = json.loads(crds.ok("get", "ap", "demo", "-n", namespace, "-o", "json"))

    assert "agents" not in pool.get("status", {})


def test_buildstep_spec_is_immutable(crds: Cluster, namespace: str) -> None:
    crds.ok("apply", "-n", namespace, "-f", str(ROOT / "examples" / "build-hello.yaml"))

    result = crds.kubectl(
        "patch", "bs", "hello-test", "-n", namespace, "--type=merge",
        "-p", '{"spec":{"script":"rm -rf /"}}',
    )  # fmt: skip

    assert result.returncode != 0
    assert "BuildStep spec is immutable; create a new BuildStep instead" in result.stderr


def test_delete(crds: Cluster, namespace: str) -> None:
    crds.ok("apply", "-n", namespace, "-f", str(ROOT / "examples" / "build-hello.yaml"))

    out = crds.ok("delete", "bs", "hello-test", "-n", namespace)
    gone = crds.kubectl("get", "bs", "hello-test", "-n", namespace)

    assert 'buildstep.agentpool.dev "hello-test" deleted' in out
    assert gone.returncode == 1
    assert 'buildsteps.agentpool.dev "hello-test" not found' in gone.stderr


def test_get_watch_sees_events(crds: Cluster, namespace: str) -> None:
    watch = subprocess.Popen(
        [
            crds.kubectl_path, f"--kubeconfig={crds.kubeconfig}", "get", "bs", "-n", namespace,
            "--watch", "--output-watch-events",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        lines = LineReader(watch.stdout)  # type: ignore[arg-type]
        crds.ok("apply", "-n", namespace, "-f", "-", input=BUILDSTEP.format(name="first"))
        lines.wait_for("ADDED", "first")

        crds.ok("apply", "-n", namespace, "-f", "-", input=BUILDSTEP.format(name="second"))
        crds.ok("delete", "bs", "first", "-n", namespace)

        lines.wait_for("ADDED", "second")
        lines.wait_for("DELETED", "first")
    finally:
        watch.kill()
        watch.wait()


def test_explain_uses_the_crd_descriptions(crds: Cluster) -> None:
    sessions = crds.ok("explain", "agentpool.spec.sessions")
    script = crds.ok("explain", "bs.spec.script")

    assert "successive steps of one build on one container share one exec" in " ".join(
        sessions.split()
    )
    assert "batchWindow" in sessions
    assert "Limited to 256 KiB" in script


def test_schema_invalid_pool_is_rejected_naming_the_field(crds: Cluster, namespace: str) -> None:
    invalid = yaml.safe_load((ROOT / "examples" / "agentpool.yaml").read_text())
    invalid["spec"]["minIdle"] = -1
    invalid["spec"]["idleTimeout"] = "ten minutes"

    result = crds.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(invalid))

    assert result.returncode != 0
    assert "spec.minIdle" in result.stderr
    assert "spec.idleTimeout" in result.stderr


def test_buildstep_without_script_is_rejected(crds: Cluster, namespace: str) -> None:
    step = "apiVersion: agentpool.dev/v1alpha1\nkind: BuildStep\nmetadata: {name: s}\n"
    step += "spec: {pool: demo}\n"

    result = crds.kubectl("create", "-n", namespace, "-f", "-", input=step)

    assert result.returncode != 0
    assert "spec.script: Required value" in result.stderr
