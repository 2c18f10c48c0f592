"""The step engine on the sandbox: batching, order, skip semantics, bad input."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from engine_harness import NS, engine_on_sandbox, step_body

from agentpool.config import Config
from agentpool_sandbox.testing import eventually


async def test_twenty_steps_of_a_build_share_one_exec_session(tmp_path: Path) -> None:
    async with engine_on_sandbox(tmp_path) as h:
        out = h.home("p-0") / "order"
        for i in range(20):
            h.create(
                step_body(f"s{i:02d}", f"echo {i} >> {out}; echo step {i}", build="b", order=i)
            )

        statuses = await h.wait_final(*[f"s{i:02d}" for i in range(20)])
        stats = await h.stats()
        # Read before the sandbox ends: removing the pods removes their directories.
        order = out.read_text().split()

    assert {s["phase"] for s in statuses.values()} == {"Succeeded"}
    assert order == [str(i) for i in range(20)]
    assert statuses["s07"]["logTail"] == "step 7\n"
    assert statuses["s07"]["exitCode"] == 0
    assert stats["exec"]["byPool"][f"{NS}/p"]["opened"] == 1
    assert len({s["session"] for s in statuses.values()}) == 1


async def test_steps_arriving_while_the_session_is_open_join_it(tmp_path: Path) -> None:
    config = Config(build_grace=5.0)
    async with engine_on_sandbox(
        tmp_path, pools={"p": ({"sessions": {"linger": "5s"}}, 1)}, config=config
    ) as h:
        h.create(step_body("first", "echo one", build="b"))
        await h.wait_final("first")
        h.create(step_body("second", "echo two", build="b"))
        statuses = await h.wait_final("second")
        stats = await h.stats()

    assert statuses["second"]["phase"] == "Succeeded"
    assert stats["exec"]["byPool"][f"{NS}/p"]["opened"] == 1


async def test_failure_skips_later_steps_but_run_policy_always_runs(tmp_path: Path) -> None:
    async with engine_on_sandbox(tmp_path) as h:
        h.create(step_body("a", "echo a", build="b", order=1))
        h.create(step_body("b", "echo failing; exit 3", build="b", order=2))
        h.create(step_body("c", "echo c", build="b", order=3))
        h.create(step_body("d", "echo cleanup", build="b", order=4, runPolicy="Always"))
        statuses = await h.wait_final("a", "b", "c", "d")
        h.create(step_body("late", "echo late", build="b", order=0))
        late = (await h.wait_final("late"))["late"]

    assert [statuses[n]["phase"] for n in "abcd"] == ["Succeeded", "Failed", "Skipped", "Succeeded"]
    assert (statuses["b"]["reason"], statuses["b"]["exitCode"]) == ("ScriptFailed", 3)
    assert statuses["c"]["reason"] == "PreviousStepFailed"
    assert "step b " in statuses["c"]["message"]
    assert statuses["d"]["logTail"] == "cleanup\n"
    assert late["phase"] == "Skipped"


async def test_bad_input_fails_clearly_and_other_steps_go_on(tmp_path: Path) -> None:
    async with engine_on_sandbox(tmp_path) as h:
        h.create(step_body("nocontainer", "echo x", container="missing"))
        h.create(step_body("blank", "   "))
        h.create(step_body("fine", "echo fine"))
        statuses = await h.wait_final("nocontainer", "blank", "fine")

    assert statuses["nocontainer"]["phase"] == "Failed"
    assert statuses["nocontainer"]["reason"] == "ContainerNotFound"
    assert "'missing'" in statuses["nocontainer"]["message"]
    assert (statuses["blank"]["phase"], statuses["blank"]["reason"]) == ("Failed", "InvalidScript")
    assert statuses["fine"]["phase"] == "Succeeded"


async def test_unknown_pool_waits_pending_then_runs_when_it_appears(tmp_path: Path) -> None:
    async with engine_on_sandbox(tmp_path, pools={"p": ({}, 1)}) as h:
        h.create(step_body("early", "echo early", pool="later"))
        await h.wait_until(lambda: h.status("early").get("reason") == "PoolNotFound")
        pending = h.status("early")
        from engine_harness import pool_body, start_pods  # noqa: PLC0415

        await start_pods(h.sandbox, "later", ["later-0"])
        h.agents.add_pool(f"{NS}/later", pool_body("later"), ["later-0"])
        h.engine.pool_changed(f"{NS}/later")
        statuses = await h.wait_final("early")

    assert pending["phase"] == "Pending"
    assert "later" in pending["message"]
    assert statuses["early"]["phase"] == "Succeeded"


async def test_idle_build_hands_its_agent_to_a_waiting_build(tmp_path: Path) -> None:
    # Linger and grace far beyond the wait below: only the hand-over lets build b run.
    config = Config(build_grace=600.0)
    async with engine_on_sandbox(
        tmp_path, pools={"p": ({"sessions": {"linger": "600s"}}, 1)}, config=config
    ) as h:
        h.create(step_body("a1", "echo a", build="a"))
        await h.wait_final("a1")
        h.create(step_body("b1", "echo b", build="b"))
        statuses = await h.wait_final("b1", within=20.0)

    assert statuses["b1"]["phase"] == "Succeeded"
    assert [build for build, _ in h.agents.acquired] == [f"{NS}/a", f"{NS}/b"]
    assert h.agents.released[0] == ("p-0", False)


async def test_step_delivered_late_by_a_starved_loop_still_runs_in_order(tmp_path: Path) -> None:
    # kopf hands steps created together to the engine one by one, each after several loop
    # iterations; a starved operator thread stretches that past the batch window in wall
    # time. The window counts the loop's progress, so the earlier step is still seen first.
    async with engine_on_sandbox(tmp_path) as h:
        out = h.home("p-0") / "order"
        window = h.agents.specs[f"{NS}/p"].sessions.batch_window

        def deliver(name: str, order: int) -> None:
            body = step_body(name, f"echo {name} >> {out}", build="b", order=order)
            h.engine.on_step_event("ADDED", h.create(body))

        async def starved_delivery() -> None:
            # The operator's thread gets no CPU: the loop stalls (deliberately blocking).
            time.sleep(3 * window)  # noqa: ASYNC251
            for _ in range(5):  # kopf's worker needs a few iterations per event
                await asyncio.sleep(0)
            deliver("first", 1)

        deliver("second", 2)
        await starved_delivery()
        statuses = await h.wait_final("first", "second")
        order = out.read_text().split()

    assert {s["phase"] for s in statuses.values()} == {"Succeeded"}
    assert order == ["first", "second"]


async def _steps_seen_by_a_quota_waiter(
    tmp_path: Path, session_hold: float, *, limit: int, session: bool
) -> tuple[list[bool], int]:
    """A build of four steps whose first one runs until a waiter is queued on the pool's quota
    (another build's session when `session`, else a short request; with a limit of 2 the test
    holds the reserved slot all along): which steps had run when the waiter got its slot, and
    the exec sessions the build opened."""
    spec = {
        "apiConnections": {"max": limit, "queueTimeout": "60s"},
        "sessions": {"pollInterval": "100ms", "linger": "0s"},
    }
    async with engine_on_sandbox(
        tmp_path, pools={"p": (spec, 1)}, config=Config(build_grace=0.2, session_hold=session_hold)
    ) as h:
        quota = h.agents.quota(f"{NS}/p")
        assert quota is not None
        holder = await quota.acquire("test", "holder") if limit > 1 else None
        home = h.home("p-0")
        gate = f"while [ ! -e {home}/go ]; do sleep 0.02; done"
        for i in range(4):
            h.create(
                step_body(
                    f"s{i}", f"touch {home}/s{i}; {gate if i == 0 else ''}", order=i, build="b"
                )
            )
        await eventually((home / "s0").exists, 20, "the first step to start")

        async def waiter() -> list[bool]:
            if session:
                slot = await quota.acquire_session("waiter")
            else:
                slot = await quota.acquire("test", "waiter")
            seen = [(home / f"s{i}").exists() for i in range(4)]
            quota.release(slot)
            return seen

        waiting = asyncio.create_task(waiter())
        # Queued behind the session, or served at once by a session that yielded already.
        await eventually(
            lambda: waiting.done() or any(w.target == "waiter" for w in quota.queued()),
            20,
            "the waiter to queue",
        )
        (home / "go").touch()
        statuses = await h.wait_final(*(f"s{i}" for i in range(4)), within=60)
        seen = await waiting
        if holder is not None:
            quota.release(holder)
        stats = await h.stats()

    assert {s["phase"] for s in statuses.values()} == {"Succeeded"}
    opened = stats["exec"]["byPool"][f"{NS}/p"]["opened"]
    return seen, opened


async def test_a_session_changes_hands_at_the_build_boundary_not_between_steps(
    tmp_path: Path,
) -> None:
    # Another build waits for the pool's only session slot from the first step on; the
    # build's queued steps still run in the session that is open, not one session each.
    seen, opened = await _steps_seen_by_a_quota_waiter(
        tmp_path, session_hold=0.0, limit=2, session=True
    )

    assert seen == [True, True, True, True]
    assert opened == 1


async def test_a_status_write_never_makes_a_session_yield(tmp_path: Path) -> None:
    # The waiting request gets the reserved slot's turn; the session is not disturbed.
    _, opened = await _steps_seen_by_a_quota_waiter(
        tmp_path, session_hold=0.0, limit=2, session=False
    )

    assert opened == 1


async def test_with_a_limit_of_one_starved_requests_get_the_slot_after_the_hold(
    tmp_path: Path,
) -> None:
    # Nothing can be reserved: a waiting request takes the one slot between steps.
    seen, opened = await _steps_seen_by_a_quota_waiter(
        tmp_path, session_hold=0.0, limit=1, session=False
    )

    assert seen == [True, False, False, False]
    assert opened >= 2


async def test_with_a_limit_of_one_a_long_hold_keeps_the_build_going(tmp_path: Path) -> None:
    seen, opened = await _steps_seen_by_a_quota_waiter(
        tmp_path, session_hold=600.0, limit=1, session=False
    )

    assert seen == [True, True, True, True]
    assert opened == 1


async def test_a_long_step_detaches_while_builds_wait_and_is_collected_once(
    tmp_path: Path,
) -> None:
    # One session slot (max 2 keeps one for requests), two agents, two builds: the long step
    # of build "long" must not keep build "short" waiting for the slot until it ends.
    spec = {
        "apiConnections": {"max": 2, "queueTimeout": "60s"},
        "sessions": {"detachAfter": "200ms", "pollInterval": "100ms", "linger": "0s"},
    }
    async with engine_on_sandbox(tmp_path, pools={"p": (spec, 2)}) as h:
        gate = tmp_path / "go"
        h.create(
            step_body(
                "long-1",
                f"echo begin; while [ ! -e {gate} ]; do sleep 0.02; done; echo end",
                build="long",
            )
        )
        await h.wait_until(lambda: h.status("long-1").get("phase") == "Running")
        h.create(step_body("short-1", "echo short", build="short"))
        # The short build gets the slot while the long step still runs: it detached.
        short = await h.wait_final("short-1", within=30)
        assert not gate.exists()
        gate.touch()
        long = await h.wait_final("long-1", within=30)
        stats = await h.stats()

    assert short["short-1"]["phase"] == "Succeeded"
    assert long["long-1"]["phase"] == "Succeeded"
    assert long["long-1"]["logTail"] == "begin\nend\n"  # collected whole, run once
    assert stats["exec"]["byPool"][f"{NS}/p"]["peak"] <= 1
    assert stats["exec"]["byPool"][f"{NS}/p"]["opened"] >= 3  # long, short, the collection
