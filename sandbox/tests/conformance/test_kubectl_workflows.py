"""kubectl workflows users and GitOps tools rely on: server-side apply, diff, dry-run, edit."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import yaml
from conformance_cluster import ROOT, Cluster

POOL = ROOT / "examples" / "agentpool.yaml"


def pool_with(**spec: object) -> str:
    pool = yaml.safe_load(POOL.read_text())
    pool["spec"].update(spec)
    return yaml.safe_dump(pool)


def test_server_side_apply_of_the_examples(crds: Cluster, namespace: str) -> None:
    out = crds.ok("apply", "--server-side", "-n", namespace, "-f", str(ROOT / "examples"))
    again = crds.ok("apply", "--server-side", "-n", namespace, "-f", str(ROOT / "examples"))

    assert "agentpool.agentpool.dev/demo serverside-applied" in out
    assert "buildstep.agentpool.dev/release-cleanup serverside-applied" in again


def test_diff_shows_a_changed_field(crds: Cluster, namespace: str) -> None:
    crds.ok("apply", "-n", namespace, "-f", str(POOL))

    same = crds.kubectl("diff", "-n", namespace, "-f", str(POOL))
    changed = crds.kubectl("diff", "-n", namespace, "-f", "-", input=pool_with(maxAgents=7))

    assert (same.returncode, same.stdout) == (0, "")
    assert changed.returncode == 1, changed.stderr
    assert "-  maxAgents: 3" in changed.stdout
    assert "+  maxAgents: 7" in changed.stdout


def test_server_dry_run_validates_without_storing(crds: Cluster, namespace: str) -> None:
    valid = crds.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", str(POOL))
    invalid = crds.kubectl(
        "apply", "--dry-run=server", "-n", namespace, "-f", "-", input=pool_with(maxAgents=0)
    )
    stored = crds.kubectl("get", "ap", "demo", "-n", namespace)

    assert valid.returncode == 0
    assert "server dry run" in valid.stdout
    assert invalid.returncode != 0
    assert "spec.maxAgents" in invalid.stderr
    assert stored.returncode == 1


def test_cel_rule_min_idle_not_above_max_agents(crds: Cluster, namespace: str) -> None:
    result = crds.kubectl(
        "apply", "-n", namespace, "-f", "-", input=pool_with(minIdle=5, maxAgents=2)
    )

    assert result.returncode != 0
    assert "spec.minIdle" in result.stderr
    assert "lower minIdle or raise maxAgents" in result.stderr


def test_edit_with_a_scripted_editor(crds: Cluster, namespace: str) -> None:
    crds.ok("apply", "-n", namespace, "-f", str(POOL))
    editor = f'{sys.executable} -c "import sys,re; p=sys.argv[1]; '
    editor += "t=open(p).read(); open(p,'w').write(re.sub('maxAgents: 3','maxAgents: 4',t))\""

    result = subprocess.run(
        [crds.kubectl_path, f"--kubeconfig={crds.kubeconfig}", "edit", "ap/demo", "-n", namespace],
        env={**os.environ, "KUBE_EDITOR": editor},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    pool = json.loads(crds.ok("get", "ap", "demo", "-n", namespace, "-o", "json"))

    assert result.returncode == 0, result.stderr
    assert "agentpool.agentpool.dev/demo edited" in result.stdout
    assert pool["spec"]["maxAgents"] == 4


def test_replace_with_a_stale_resource_version_conflicts(crds: Cluster, namespace: str) -> None:
    crds.ok("apply", "-n", namespace, "-f", str(POOL))
    stale = json.loads(crds.ok("get", "ap", "demo", "-n", namespace, "-o", "json"))
    crds.ok("label", "ap", "demo", "-n", namespace, "team=ci")
    stale["spec"]["maxAgents"] = 9

    result = crds.kubectl("replace", "-n", namespace, "-f", "-", input=json.dumps(stale))

    assert result.returncode != 0
    assert "the object has been modified" in result.stderr


def test_label_selector_and_custom_columns(crds: Cluster, namespace: str) -> None:
    crds.ok("apply", "-n", namespace, "-f", str(ROOT / "examples"))
    crds.ok("label", "bs", "release-test", "release-cleanup", "-n", namespace, "stage=late")

    out = crds.ok(
        "get", "bs", "-n", namespace, "-l", "stage=late", "--sort-by=.spec.order",
        "-o", "custom-columns=NAME:.metadata.name,ORDER:.spec.order,POLICY:.spec.runPolicy",
    )  # fmt: skip

    assert out.split("\n")[1:3] == [
        "release-test      2       OnSuccess",
        "release-cleanup   4       Always",
    ]


def test_wide_output_shows_extra_columns(crds: Cluster, namespace: str) -> None:
    crds.ok("apply", "-n", namespace, "-f", str(ROOT / "examples" / "build-hello.yaml"))

    out = crds.ok("get", "bs", "-n", namespace, "-o", "wide")

    assert out.splitlines()[0].split() == [
        "NAME", "POOL", "BUILD", "PHASE", "EXIT", "AGENT", "AGE", "REASON", "ATTEMPTS",
    ]  # fmt: skip


def test_wait_for_a_status_field(crds: Cluster, namespace: str) -> None:
    crds.ok("apply", "-n", namespace, "-f", str(ROOT / "examples" / "build-hello.yaml"))
    waiter = subprocess.Popen(
        [
            crds.kubectl_path, f"--kubeconfig={crds.kubeconfig}", "wait", "-n", namespace,
            "--for=jsonpath={.status.phase}=Succeeded", "--timeout=30s", "bs/hello-test",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    status = {"status": {"phase": "Succeeded", "exitCode": 0}}

    crds.ok(
        "patch", "bs", "hello-test", "-n", namespace, "--subresource=status",
        "--type=merge", "-p", json.dumps(status),
    )  # fmt: skip
    out, err = waiter.communicate(timeout=60)

    assert waiter.returncode == 0, err
    assert "buildstep.agentpool.dev/hello-test condition met" in out


def test_delete_the_examples(crds: Cluster, namespace: str) -> None:
    crds.ok("apply", "-n", namespace, "-f", str(ROOT / "examples"))

    crds.ok("delete", "-n", namespace, "-f", str(ROOT / "examples"), "--wait=true")
    left = crds.ok("get", "ci", "-n", namespace, "-o", "name")

    assert left == ""


def test_explain_a_builtin_kind(cluster: Cluster) -> None:
    out = cluster.ok("explain", "pod.spec.containers.image")

    assert "FIELD: image <string>" in out


def test_openapi_v2_is_served_as_json_and_as_protobuf(cluster: Cluster) -> None:
    """kubectl's v2 consumers ask for gnostic protobuf only, and must get something to parse."""
    raw = json.loads(cluster.ok("get", "--raw", "/openapi/v2"))

    explained = cluster.ok("explain", "pod.spec.restartPolicy", "--output=plaintext-openapiv2")

    assert raw["swagger"] == "2.0"
    assert "FIELD:    restartPolicy <string>" in explained


def test_apply_a_list_of_builtin_and_custom_objects(crds: Cluster, namespace: str) -> None:
    """`kind: List` is validated on the client against OpenAPI v2 (protobuf) before it is sent."""
    listed = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "listed"}},
            yaml.safe_load(pool_with(minIdle=0)),
            {
                "apiVersion": "agentpool.dev/v1alpha1",
                "kind": "BuildStep",
                "metadata": {"name": "listed-step"},
                "spec": {"pool": "demo", "build": "b", "order": 1, "script": "true"},
            },
        ],
    }

    out = crds.ok("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(listed))
    names = crds.ok(
        "get", "configmap/listed", "agentpool/demo", "bs/listed-step", "-n", namespace, "-o", "name"
    )

    assert "configmap/listed created" in out
    assert "buildstep.agentpool.dev/listed-step created" in out
    assert len(names.split()) == 3


def test_apply_a_list_reports_schema_errors_of_its_items(crds: Cluster, namespace: str) -> None:
    """The v2 schemas (built-in and CRD) are complete enough for kubectl's own validation."""
    listed = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "dataa": {}},
            {
                "apiVersion": "agentpool.dev/v1alpha1",
                "kind": "BuildStep",
                "metadata": {"name": "s"},
                "spec": {"pool": "demo", "build": "b", "order": "one", "script": "true"},
            },
        ],
    }

    refused = crds.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(listed))

    assert refused.returncode != 0
    assert 'unknown field "dataa" in io.k8s.api.core.v1.ConfigMap' in refused.stderr
    assert "BuildStep.spec.order" in refused.stderr and 'expected "integer"' in refused.stderr
