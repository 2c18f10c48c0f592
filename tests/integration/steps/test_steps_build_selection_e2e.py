"""Every step names its build in `status.build` (spec.build, or its own name when spec.build
is left out), so kubectl's BUILD column is always filled and a build's, or a phase's, steps
are one field selector away."""

from __future__ import annotations

from step_client import BuildSteps


async def test_kubectl_selects_steps_by_resolved_build_and_by_phase(
    operator: object, buildsteps: BuildSteps
) -> None:
    await buildsteps.pool("p", maxAgents=1)
    await buildsteps.create("solo", "echo alone")  # spec.build left out: a build of its own
    await buildsteps.create("r0", "exit 3", build="release", order=0)
    await buildsteps.create("r1", "echo never", build="release", order=1)
    final = await buildsteps.wait_final("solo", "r0", "r1")

    assert {name: status["build"] for name, status in final.items()} == {
        "solo": "solo",
        "r0": "release",
        "r1": "release",
    }
    table = await buildsteps.kubectl("get", "bs", "solo", "r0", "--no-headers")
    assert [line.split()[:4] for line in table.splitlines()] == [
        ["solo", "p", "solo", "Succeeded"],
        ["r0", "p", "release", "Failed"],
    ]
    by_build = await buildsteps.kubectl(
        "get", "bs", "--field-selector=status.build=solo", "-o", "name"
    )
    assert by_build.split() == ["buildstep.agentpool.dev/solo"]
    failed = await buildsteps.kubectl(
        "get", "bs", "--field-selector=status.phase!=Succeeded,status.build=release", "-o", "name"
    )
    assert failed.split() == ["buildstep.agentpool.dev/r0", "buildstep.agentpool.dev/r1"]
