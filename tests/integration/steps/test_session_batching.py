"""Many steps over one session: batching, joining, exit codes, env and working dir."""

from __future__ import annotations

import asyncio

from agentpool.steps.protocol import StepRequest


def step(step_id: str, script: str, **kwargs: object) -> StepRequest:
    return StepRequest(step_id=step_id, script=script.encode(), **kwargs)  # type: ignore[arg-type]


async def test_twenty_steps_in_one_session(open_session, container) -> None:
    session, shell = await open_session()

    handles = [
        await session.submit(step(f"s{i}", f"echo step {i}; exit {i % 3}")) for i in range(20)
    ]
    results = [await h.wait() for h in handles]

    assert [r.exit_code for r in results] == [i % 3 for i in range(20)]
    assert [h.tail for h in handles] == [f"step {i}\n".encode() for i in range(20)]
    assert session.steps_submitted == 20
    async with asyncio.timeout(10):
        await session.close()
    assert await shell.result() == 0


async def test_step_joins_open_session_while_another_runs(open_session, container, until) -> None:
    session, _ = await open_session()
    gate = container.root / "gate"
    first = await session.submit(
        step("first", f"while [ ! -e {gate} ]; do sleep 0.01; done; echo one")
    )
    await first.started.wait()

    second = await session.submit(step("second", "echo two"))
    assert (await second.wait()).exit_code == 0
    gate.touch()

    assert (await first.wait()).exit_code == 0
    assert (first.tail, second.tail) == (b"one\n", b"two\n")
    later = await session.submit(step("third", "echo three"))
    assert ((await later.wait()).exit_code, later.tail) == (0, b"three\n")
    assert session.idle_since is not None


async def test_failure_exit_code_and_stderr_in_log(open_session) -> None:
    session, _ = await open_session()

    handle = await session.submit(step("fail", "echo out; echo err >&2; exit 42"))
    result = await handle.wait()

    assert (result.exit_code, result.reason, result.total_bytes) == (42, "exit", 8)
    assert handle.tail == b"out\nerr\n"


async def test_env_working_dir_and_shell(open_session, container) -> None:
    session, _ = await open_session()
    workdir = container.root / "work dir"
    workdir.mkdir()
    request = step(
        "env",
        'printf "%s|%s|%s" "$A" "$B" "$(pwd)"',
        env={"A": "it's $HOME `x`", "B": "line1\nline2"},
        working_dir=str(workdir),
        shell=container.sh,
    )

    handle = await session.submit(request)
    await handle.wait()

    assert handle.tail == f"it's $HOME `x`|line1\nline2|{workdir}".encode()


async def test_missing_working_dir_is_created(open_session, container) -> None:
    session, _ = await open_session()
    workdir = container.root / "made" / "for me"

    handle = await session.submit(step("mkdir", "pwd", working_dir=str(workdir)))

    assert ((await handle.wait()).exit_code, handle.tail) == (0, f"{workdir}\n".encode())


async def test_unusable_working_dir_fails_the_step_not_the_session(open_session, container) -> None:
    session, _ = await open_session()
    blocker = container.root / "a file"
    blocker.write_text("not a directory")
    marker = container.root / "ran"

    bad = await session.submit(step("bad", f"touch {marker}", working_dir=str(blocker / "sub")))
    good = await session.submit(step("good", "echo fine"))

    result = await bad.wait()
    assert (result.exit_code, result.reason) == (126, "workdir")
    assert b"cannot create or enter workingDir" in bad.tail
    assert b"mkdir" in bad.tail  # and why: mkdir's own message
    assert not marker.exists()
    assert (await good.wait()).exit_code == 0


async def test_empty_output_and_duplicate_submit(open_session, container) -> None:
    session, _ = await open_session()
    counter = container.root / "count"

    handle = await session.submit(step("quiet", f"echo x >> {counter}"))
    result = await handle.wait()
    again = await session.submit(step("quiet", f"echo x >> {counter}"))

    assert (await again.wait()) == result
    assert (result.total_bytes, handle.tail) == (0, b"")
    assert counter.read_text() == "x\n"


async def test_steps_submitted_concurrently_all_finish(open_session) -> None:
    session, _ = await open_session()

    handles = await asyncio.gather(*(session.submit(step(f"c{i}", f"echo {i}")) for i in range(10)))
    results = await asyncio.gather(*(h.wait() for h in handles))

    assert all(r.exit_code == 0 for r in results)
    assert sorted(h.tail for h in handles) == sorted(f"{i}\n".encode() for i in range(10))


async def test_missing_shell_fails_without_running_the_script_as_sh(
    open_session, container
) -> None:
    session, _ = await open_session()
    marker = container.root / "ran"

    handle = await session.submit(step("noshell", f"touch {marker}\n", shell="/no/such/shell"))
    unnamed = await session.submit(step("nopath", f"touch {marker}\n", shell="no-such-shell"))

    for h in (handle, unnamed):
        assert ((await h.wait()).exit_code, (await h.wait()).reason) == (127, "shell")
    assert b"no executable shell /no/such/shell in this container" in handle.tail
    assert not marker.exists()
