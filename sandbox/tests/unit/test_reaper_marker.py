"""Which environment blocks carry a pod's marker."""

from __future__ import annotations

from agentpool_sandbox import reaper


def test_a_block_with_every_entry_carries_the_marker() -> None:
    marker = reaper.marker("rt", "uid-1")
    environ = b"PATH=/bin\0SANDBOX_RUNTIME=rt\0SANDBOX_POD_UID=uid-1\0"

    assert reaper.carries(environ, marker)


def test_a_prefix_or_another_pod_does_not_carry_it() -> None:
    marker = reaper.marker("rt", "uid-1")

    assert not reaper.carries(b"SANDBOX_RUNTIME=rt\0SANDBOX_POD_UID=uid-10\0", marker)
    assert not reaper.carries(b"SANDBOX_RUNTIME=rt2\0SANDBOX_POD_UID=uid-1\0", marker)


def test_the_runtime_marker_matches_all_its_pods() -> None:
    environ = b"SANDBOX_RUNTIME=rt\0SANDBOX_POD_UID=any\0"

    assert reaper.carries(environ, reaper.marker("rt"))
