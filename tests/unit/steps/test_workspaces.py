"""Build workspace names: safe for the driver, readable, apart per namespace and build."""

from __future__ import annotations

import pytest

from agentpool.model import AgentPoolSpec, SpecError, WorkspaceIsolation
from agentpool.steps import protocol, workspaces
from agentpool.steps.protocol import StepRequest, StepRequestError

TEMPLATE = {"spec": {"containers": [{"name": "agent", "image": "busybox"}]}}


@pytest.mark.parametrize(
    "build",
    ["release", "Team B/feature #12", "../../etc", ".hidden", "x" * 253, "-", "ü"],
)
def test_a_build_name_becomes_a_safe_directory_name(build: str) -> None:
    name = workspaces.for_build("default", build)

    assert protocol.STEP_ID.fullmatch(name)
    assert not name.startswith(".")
    assert "/" not in name


def test_builds_are_kept_apart_by_namespace_and_name() -> None:
    names = {
        workspaces.for_build("team-a", "release"),
        workspaces.for_build("team-b", "release"),
        workspaces.for_build("team-a", "Release"),
        workspaces.for_build("team-a", "release "),
    }

    assert len(names) == 4
    assert workspaces.for_build("team-a", "release").startswith("release-")


def test_an_agent_keeps_its_pod_name_unless_it_is_unsafe() -> None:
    assert workspaces.for_agent("linux-agents-7xk2p") == "linux-agents-7xk2p"
    long = "a" * 200
    assert workspaces.for_agent(long) != long
    assert protocol.STEP_ID.fullmatch(workspaces.for_agent(long))


def test_the_workspace_is_agent_then_build_and_the_request_accepts_it() -> None:
    workspace = workspaces.workspace("agent-1", "default", "release")
    request = StepRequest("s.1", b"true", workspace=workspace)

    launcher = protocol.build_launcher(request).decode()

    assert workspace.startswith("agent-1/release-")
    assert f'/.ws/{workspace}"' in launcher
    assert "TMPDIR=$w/tmp" in launcher


@pytest.mark.parametrize("workspace", ["agent", "../x", "a/../b", "a/b/c", "a/.b", "/a/b"])
def test_a_request_refuses_a_workspace_that_could_leave_its_directory(workspace: str) -> None:
    with pytest.raises(StepRequestError):
        protocol.build_launcher(StepRequest("s.1", b"true", workspace=workspace))


def test_clean_names_the_agent_and_what_to_keep() -> None:
    assert protocol.build_clean("agent-1", "release-0123") == b"clean agent-1 release-0123\n"
    assert protocol.build_clean("agent-1") == b"clean agent-1 -\n"
    with pytest.raises(StepRequestError):
        protocol.build_clean("../x")


def test_the_pool_isolates_builds_unless_told_to_share() -> None:
    assert AgentPoolSpec.from_body({"template": TEMPLATE}).workspace.isolation is (
        WorkspaceIsolation.PER_BUILD
    )
    shared = AgentPoolSpec.from_body({"template": TEMPLATE, "workspace": {"isolation": "Shared"}})
    assert shared.workspace.isolation is WorkspaceIsolation.SHARED
    with pytest.raises(SpecError, match="use PerBuild or Shared"):
        AgentPoolSpec.from_body({"template": TEMPLATE, "workspace": {"isolation": "Private"}})
