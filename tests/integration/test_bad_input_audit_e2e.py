"""A careless or hostile user against the whole operator on the sandbox: absurd pools, steps
whose pool is deleted under them, values the schema refuses. Each case ends with a clear
reason (or an apply-time refusal), and good work of other pools keeps running."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio.client import ApiClient, CoreV1Api, CustomObjectsApi
from kubernetes_asyncio.client.exceptions import ApiException

from agentpool.kube import client as kube
from agentpool_sandbox.testing import eventually

NAMESPACE = "default"
FINAL = ("Succeeded", "Failed", "Skipped", "Cancelled")


@pytest.fixture
def sandbox_time_scale() -> float:
    return 0.1


class Objects:
    """AgentPools and BuildSteps written and read with the test's client."""

    def __init__(self, api: ApiClient) -> None:
        self.api = CustomObjectsApi(api)
        self.core = CoreV1Api(api)

    async def reasons(self, involved: str) -> list[str]:
        events = await self.core.list_namespaced_event(NAMESPACE)
        return [e.reason for e in events.items if e.involved_object.name == involved]

    async def pool(self, name: str, **spec: Any) -> None:
        body = {
            "apiVersion": f"{kube.GROUP}/{kube.VERSION}",
            "kind": "AgentPool",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {
                "template": {"spec": {"containers": [{"name": "main", "image": "busybox"}]}},
                "minIdle": 1,
                "maxAgents": 3,
                **spec,
            },
        }
        await self.api.create_namespaced_custom_object(
            kube.GROUP, kube.VERSION, NAMESPACE, kube.AGENTPOOLS, body
        )

    async def step(self, name: str, script: str, pool: str, **spec: Any) -> None:
        body = {
            "apiVersion": f"{kube.GROUP}/{kube.VERSION}",
            "kind": "BuildStep",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"pool": pool, "script": script, **spec},
        }
        await self.api.create_namespaced_custom_object(
            kube.GROUP, kube.VERSION, NAMESPACE, kube.BUILDSTEPS, body
        )

    async def delete_pool(self, name: str) -> None:
        await self.api.delete_namespaced_custom_object(
            kube.GROUP, kube.VERSION, NAMESPACE, kube.AGENTPOOLS, name
        )

    async def status(self, plural: str, name: str) -> dict[str, Any]:
        body = await self.api.get_namespaced_custom_object(
            kube.GROUP, kube.VERSION, NAMESPACE, plural, name
        )
        return dict(body.get("status") or {})

    async def wait_step(self, name: str, *phases: str, within: float = 20.0) -> dict[str, Any]:
        async def reached() -> dict[str, Any] | None:
            status = await self.status(kube.BUILDSTEPS, name)
            return status if status.get("phase") in phases else None

        return await eventually(reached, within, f"step {name} in {phases}")


@pytest.fixture
def objects(kube_api: ApiClient) -> Objects:
    return Objects(kube_api)


async def test_steps_of_a_deleted_pool_wait_for_it_with_a_reason_and_run_when_it_is_back(
    operator: Any, objects: Objects, tmp_path: Path
) -> None:
    marker = tmp_path / "first-attempt"
    # The first attempt blocks until its agent goes with the pool; the retry finishes at once.
    script = f"if [ -e {marker} ]; then echo again; else touch {marker}; sleep 30; fi"
    await objects.pool("doomed")
    await objects.step("running", script, "doomed", build="b")
    await objects.step("behind", "echo behind", "doomed", build="b", order=1)
    await objects.wait_step("running", "Running")

    await objects.delete_pool("doomed")
    running = await objects.wait_step("running", "Pending")
    behind = await objects.wait_step("behind", "Pending")
    await objects.pool("doomed")
    done = await objects.wait_step("running", *FINAL)
    after = await objects.wait_step("behind", *FINAL)

    for parked in (running, behind):
        assert parked["reason"] == "PoolNotFound"
        assert "AgentPool default/doomed does not exist" in parked["message"]
    assert running["attempts"] == 2
    assert (done["phase"], done["logTail"], done["attempts"]) == ("Succeeded", "again\n", 2)
    assert (after["phase"], after["logTail"]) == ("Succeeded", "behind\n")


async def test_a_retry_waiting_for_an_agent_when_its_pool_is_deleted_waits_for_the_pool(
    operator: Any, objects: Objects, tmp_path: Path
) -> None:
    # The order a real deletion may take: the agent pod goes first (garbage collection), the
    # step's retry waits for an agent, then the pool's own deletion is seen.
    marker = tmp_path / "first-attempt"
    script = f"if [ -e {marker} ]; then echo again; else touch {marker}; sleep 30; fi"
    await objects.pool("fickle", maxAgents=1)
    await objects.step("s", script, "fickle")
    agent = (await objects.wait_step("s", "Running"))["agent"]
    unstartable = {"sandbox.agentpool.dev/profile": "unschedulable"}
    await objects.api.patch_namespaced_custom_object(
        kube.GROUP,
        kube.VERSION,
        NAMESPACE,
        kube.AGENTPOOLS,
        "fickle",
        {"spec": {"template": {"metadata": {"annotations": unstartable}}}},
        _content_type="application/merge-patch+json",
    )
    await objects.core.delete_namespaced_pod(agent, NAMESPACE)
    await eventually(
        lambda: _waiting_builds(operator, "default/fickle"), 20, "the retry to wait for an agent"
    )

    await objects.delete_pool("fickle")
    parked = await objects.wait_step("s", "Pending")
    await objects.pool("fickle")
    done = await objects.wait_step("s", *FINAL)

    assert (parked["reason"], parked["attempts"]) == ("PoolNotFound", 2)
    assert (done["phase"], done["logTail"], done["attempts"]) == ("Succeeded", "again\n", 2)


async def _waiting_builds(operator: Any, pool: str) -> bool:
    pools = await operator.call(_describe(operator))
    return bool((pools.get(pool) or {}).get("waitingBuilds"))


async def test_a_pool_asking_for_thousands_of_agents_creates_a_few_at_a_time(
    operator: Any, objects: Objects
) -> None:
    await objects.pool("greedy", minIdle=5000, maxAgents=5000, apiConnections={"max": 4})
    await objects.pool("modest")
    await objects.step("served", "echo served", "modest")

    async def creating() -> dict[str, Any] | None:
        pools = await operator.call(_describe(operator))
        greedy = pools.get("default/greedy") or {}
        return greedy if (greedy.get("agents") or {}).get("total", 0) >= 4 else None

    greedy = await eventually(creating, 20, "the greedy pool creating agents")
    served = await objects.wait_step("served", *FINAL)
    ready = await eventually(
        lambda: _condition(objects, "greedy", "Ready"), 10, "the greedy pool's Ready condition"
    )
    await objects.delete_pool("greedy")

    # Half of apiConnections.max in flight, not 5000 requests starving every other pool.
    assert greedy["pendingCreations"] <= 2
    assert (served["phase"], served["logTail"]) == ("Succeeded", "served\n")
    assert ready["status"] == "False"
    assert "of 5000 warm agent(s) ready" in ready["message"]


def _describe(operator: Any) -> Any:
    async def describe() -> dict[str, Any]:
        pools: dict[str, Any] = operator.runtime.pools.describe()
        return pools

    return describe


async def _condition(objects: Objects, pool: str, type_: str) -> dict[str, Any] | None:
    status = await objects.status(kube.AGENTPOOLS, pool)
    found = [c for c in status.get("conditions") or [] if c.get("type") == type_]
    return found[0] if found else None


async def test_zero_durations_are_refused_when_applied(objects: Objects) -> None:
    with pytest.raises(ApiException) as pool:
        await objects.pool("hasty", startupTimeout="0m0s", sessions={"pollInterval": "0.0s"})
    with pytest.raises(ApiException) as step:
        await objects.step("instant", "echo", "p", timeout="0s")

    assert (pool.value.status, step.value.status) == (422, 422)
    assert "startupTimeout must be longer than zero, such as 5m" in pool.value.body
    assert "pollInterval must be longer than zero" in pool.value.body
    assert "timeout must be longer than zero, such as 10m" in step.value.body


async def test_unrunnable_steps_fail_once_with_a_reason_and_good_ones_run(
    operator: Any, objects: Objects
) -> None:
    await objects.pool("p")
    await objects.step("nul", "echo a\0b", "p")
    await objects.step("nulenv", "echo $V", "p", env=[{"name": "V", "value": "x\0"}])
    await objects.step("noshell", "echo hi", "p", shell="/bin/nosuchshell")
    await objects.step("nodir", "echo never", "p", workingDir="/proc/agentpool/no/dir")
    await objects.step("newdir", "pwd", "p", workingDir="made/for/me")
    await objects.step("good", "echo good", "p")

    names = ("nul", "nulenv", "noshell", "nodir", "newdir")
    steps = {n: await objects.wait_step(n, *FINAL) for n in names}
    good = await objects.wait_step("good", *FINAL)

    assert (good["phase"], good["logTail"]) == ("Succeeded", "good\n")
    nul_cases = (
        ("nul", "InvalidScript", "spec.script"),
        ("nulenv", "InvalidSpec", "spec.env[0].value"),
    )
    for name, reason, field in nul_cases:
        assert (steps[name]["phase"], steps[name]["reason"]) == ("Failed", reason)
        assert f"{field}: contains a NUL character" in steps[name]["message"]
        assert reason in await objects.reasons(name)
    # A script the container cannot start fails on its first attempt, saying why and what to
    # change, with an Event; a missing workingDir is created, as for a container.
    setup_cases = (
        ("noshell", "ShellNotFound", 127, "set spec.shell", "no executable shell /bin/nosuchshell"),
        ("nodir", "WorkingDirUnavailable", 126, "set spec.workingDir", "/proc/agentpool/no/dir"),
    )
    for name, reason, code, fix, log in setup_cases:
        assert (steps[name]["phase"], steps[name]["reason"]) == ("Failed", reason)
        assert (steps[name]["exitCode"], steps[name]["attempts"]) == (code, 1)
        assert fix in steps[name]["message"]
        assert log in steps[name]["logTail"]
        assert reason in await objects.reasons(name)
    assert steps["newdir"]["phase"] == "Succeeded"
    assert steps["newdir"]["logTail"].endswith("/made/for/me\n")
