"""Benchmark plumbing: a sandbox in a child process, the operator in this one, and the client.

- `sandbox_process(state_dir, time_scale)` serves a fresh sandbox cluster (bench/sandbox_process.py)
  and yields its `Cluster` (url, kubeconfig).
- `running_operator(config)` runs the real operator (`agentpool.runtime.run_operator`, kopf
  in-process) until the block ends.
- `BenchClient` is the tool that submits work: plain HTTP with its own User-Agent, so that the
  sandbox's counters keep its requests apart from the operator's.
- `StepWatch` follows BuildSteps through one watch and wakes waiters when steps reach a final
  phase; `PoolWatch` does the same for AgentPool status (warm agents).
- `StatsView` reads `/sandbox/v1/stats`: the figures the benchmarks report come from the
  sandbox, never from the operator's own accounting.
- `testbed(state_dir, time_scale)` is a sandbox with the client and both watches, for
  benchmarks that start an operator per configuration; `operator_process(config, log)` runs
  the operator in a child process (`agentpool run`), so that its memory and CPU are its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import math
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Self

import aiohttp
import kopf
import yaml

from agentpool import USER_AGENT
from agentpool.config import ENV_PREFIX, SETTINGS, Config
from agentpool.runtime import run_operator

ROOT = Path(__file__).resolve().parents[1]
OPERATOR_CLIENT = USER_AGENT
BENCH_CLIENT = "agentpool-bench"
NAMESPACE = "default"
GROUP_VERSION = "agentpool.dev/v1alpha1"
BUILDSTEPS = "buildsteps"
AGENTPOOLS = "agentpools"
FINAL_PHASES = frozenset({"Succeeded", "Failed", "Skipped", "Cancelled"})
# Generous bounds: a benchmark on a loaded 2-core machine must not hang, nor fail spuriously.
SANDBOX_START_WITHIN = 30.0
OPERATOR_START_WITHIN = 30.0
OPERATOR_STOP_WITHIN = 30.0

Json = dict[str, Any]


class BenchError(RuntimeError):
    """The benchmark could not run (not a measured failure)."""


# --- the cluster ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Cluster:
    url: str
    kubeconfig: Path


@contextlib.asynccontextmanager
async def sandbox_process(state_dir: Path, time_scale: float) -> AsyncIterator[Cluster]:
    """A fresh sandbox in a child process, with the project's CRDs installed."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.sandbox_process",
        "--state-dir",
        str(state_dir),
        "--time-scale",
        str(time_scale),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        async with asyncio.timeout(SANDBOX_START_WITHIN):
            line = (await process.stdout.readline()).decode().split()
        if len(line) != 2:
            raise BenchError(f"the sandbox did not start (exit code {await process.wait()})")
        cluster = Cluster(url=line[0], kubeconfig=Path(line[1]))
        async with BenchClient(cluster) as client:
            await client.install_crds()
        yield cluster
    finally:
        process.stdin.close()
        try:
            async with asyncio.timeout(10):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()
        reap(processes_under(state_dir))


# --- processes the sandbox's containers left behind -------------------------------------------


def _cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    return ""


def _cwd(pid: int) -> str:
    with contextlib.suppress(OSError):
        return os.readlink(f"/proc/{pid}/cwd")
    return ""


def processes_under(directory: Path, marker: str = "") -> list[int]:
    """Pids working in, or naming a path under, `directory` (and with `marker` in their
    command line).

    Steps detach with setsid, so they leave the process groups the sandbox kills with a pod;
    in a real cluster the container's PID namespace would end them. They run in their
    container's directory, which lives under the sandbox's.
    """
    root = str(directory.resolve())
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            pid = int(entry.name)
            line = _cmdline(pid)
            if marker in line and (root in line or _cwd(pid).startswith(root + "/")):
                found.append(pid)
    return sorted(found)


def _session(pid: int) -> int | None:
    with contextlib.suppress(OSError, IndexError, ValueError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[3])  # state ppid pgrp session
    return None


def reap(pids: Iterable[int]) -> None:
    """Kill `pids` and everything in their sessions (a step's `sleep` names no path)."""
    own = os.getsid(0)
    pids = list(pids)
    sessions = {_session(pid) for pid in pids} - {None, own}
    doomed = set(pids) | {
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and _session(int(entry.name)) in sessions
    }
    for pid in sorted(doomed - {os.getpid()}):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


# --- the operator ---------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def running_operator(config: Config) -> AsyncIterator[kopf.Memo]:
    """The operator (kopf in this event loop) from ready until the block ends; yields its memo."""
    memo = kopf.Memo()
    stop_flag, ready_flag = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(
        run_operator(
            config, stop_flag=stop_flag, ready_flag=ready_flag, memo=memo, metrics_host="127.0.0.1"
        )
    )
    ready = asyncio.create_task(ready_flag.wait())
    try:
        async with asyncio.timeout(OPERATOR_START_WITHIN):
            await asyncio.wait({ready, task}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()  # raises what stopped the operator
            raise BenchError("the operator exited during startup")
        yield memo
    finally:
        ready.cancel()
        stop_flag.set()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            async with asyncio.timeout(OPERATOR_STOP_WITHIN):
                await task
        if not task.done():
            task.cancel()


def operator_config(cluster: Cluster, **overrides: Any) -> Config:
    """Settings for a benchmarked operator: the test-suite defaults plus `overrides`."""
    base = Config(
        namespaces=(NAMESPACE,),
        metrics_port=0,
        liveness_port=0,
        standalone=True,
        kubeconfig=str(cluster.kubeconfig),
        image_pull_grace=1.0,
    )
    return base.with_overrides(overrides)


def config_environment(config: Config) -> dict[str, str]:
    """`config` as the `AGENTPOOL_*` variables that `agentpool run` reads back."""
    environment = {}
    for setting in SETTINGS:
        value = getattr(config, setting.name)
        if value is None:
            continue
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, tuple):
            text = ",".join(value)
        elif isinstance(value, enum.Enum):
            text = str(value.value)
        else:
            text = str(value)
        environment[setting.env_var] = text
    return environment


@dataclass(frozen=True)
class ProcessUsage:
    """What the kernel accounts to one process."""

    peak_rss_kib: int  # VmHWM
    cpu_seconds: float  # utime + stime


def peak_rss_kib(status_text: str) -> int:
    """VmHWM of a `/proc/<pid>/status` text, in KiB (0 when absent)."""
    for line in status_text.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(stat_text: str, ticks_per_second: int) -> float:
    """utime + stime of a `/proc/<pid>/stat` text (fields 14 and 15), in seconds."""
    fields = stat_text.rsplit(")", 1)[1].split()  # from field 3 (state) on
    return (int(fields[11]) + int(fields[12])) / ticks_per_second


def process_usage(pid: int) -> ProcessUsage:
    return ProcessUsage(
        peak_rss_kib=peak_rss_kib(Path(f"/proc/{pid}/status").read_text()),
        cpu_seconds=cpu_seconds(Path(f"/proc/{pid}/stat").read_text(), os.sysconf("SC_CLK_TCK")),
    )


@dataclass
class OperatorProcess:
    """A running `agentpool run`; `stopped_in` and `exit_code` are set once it has stopped."""

    process: asyncio.subprocess.Process
    started: float  # time.monotonic() when it was started
    log: Path
    stopped_in: float | None = None
    exit_code: int | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def usage(self) -> ProcessUsage:
        if self.process.returncode is not None:
            raise BenchError(f"the operator exited ({self.process.returncode}); see {self.log}")
        return process_usage(self.pid)


@contextlib.asynccontextmanager
async def operator_process(config: Config, log: Path) -> AsyncIterator[OperatorProcess]:
    """`agentpool run` in a child process with `config` (its output goes to `log`), stopped
    with SIGTERM (SIGKILL after OPERATOR_STOP_WITHIN) when the block ends."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    environment |= config_environment(config)
    with log.open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "agentpool.cli",
            "run",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            env=environment,
            cwd=ROOT,
        )
    running = OperatorProcess(process, time.monotonic(), log)
    try:
        yield running
    finally:
        stopping = time.monotonic()
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(OPERATOR_STOP_WITHIN):
                running.exit_code = await process.wait()
            running.stopped_in = time.monotonic() - stopping
        except TimeoutError:
            process.kill()
            running.exit_code = await process.wait()


# --- the client ----------------------------------------------------------------------------


def _collection(plural: str) -> str:
    return f"/apis/{GROUP_VERSION}/namespaces/{NAMESPACE}/{plural}"


class BenchClient:
    """The submitting tool: creates objects and reads stats over HTTP as `agentpool-bench`."""

    def __init__(self, cluster: Cluster, connections: int = 16) -> None:
        self.cluster = cluster
        self._connections = connections
        self._http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> BenchClient:
        self._http = aiohttp.ClientSession(
            self.cluster.url,
            headers={"User-Agent": BENCH_CLIENT},
            connector=aiohttp.TCPConnector(limit=self._connections),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
        )
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._http is not None:
            await self._http.close()

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._http is None:
            raise BenchError("BenchClient used outside `async with`")
        return self._http

    async def request(self, method: str, path: str, body: Any = None) -> Json:
        async with self.http.request(method, path, json=body) as response:
            document: Json = await response.json(content_type=None)
            if response.status >= 400:
                raise BenchError(f"{method} {path}: {response.status} {document.get('message')}")
            return document

    async def install_crds(self) -> None:
        for path in sorted((ROOT / "crds").glob("*.yaml")):
            await self.request(
                "POST",
                "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                yaml.safe_load(path.read_text()),
            )

    async def create(self, plural: str, body: Json) -> Json:
        return await self.request("POST", _collection(plural), body)

    async def get(self, plural: str, name: str) -> Json:
        return await self.request("GET", f"{_collection(plural)}/{name}")

    async def stats(self) -> StatsView:
        return StatsView(await self.request("GET", "/sandbox/v1/stats"))

    async def reset_stats(self) -> None:
        await self.request("DELETE", "/sandbox/v1/stats")

    async def set_faults(self, faults: Json) -> None:
        """Replace the sandbox's fault injection (`/sandbox/v1/faults`, see faults.py)."""
        await self.request("PUT", "/sandbox/v1/faults", faults)

    async def clear_faults(self) -> None:
        await self.request("DELETE", "/sandbox/v1/faults")

    async def watch(self, plural: str) -> AsyncIterator[tuple[str, Json]]:
        """Events of a collection from now on; resumes after server timeouts."""
        listing = await self.request("GET", _collection(plural))
        version = listing["metadata"]["resourceVersion"]
        for item in listing.get("items") or []:
            yield "ADDED", item
        while True:
            query = {"watch": "true", "resourceVersion": version, "timeoutSeconds": "3600"}
            async with self.http.get(_collection(plural), params=query) as response:
                async for line in response.content:
                    event = json.loads(line)
                    obj = event["object"]
                    version = obj["metadata"]["resourceVersion"]
                    if event["type"] != "BOOKMARK":
                        yield event["type"], obj


class _Follower:
    """Latest object per name of one collection, kept current by a watch task."""

    def __init__(self, client: BenchClient, plural: str) -> None:
        self.client = client
        self.plural = plural
        self.objects: dict[str, Json] = {}
        self.changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._follow())
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _follow(self) -> None:
        async for kind, obj in self.client.watch(self.plural):
            name = obj["metadata"]["name"]
            if kind == "DELETED":
                self.objects.pop(name, None)
            else:
                self.objects[name] = obj
                self.seen(name, obj)
            async with self.changed:
                self.changed.notify_all()

    def seen(self, name: str, obj: Json) -> None:
        """Called with every version of every object the watch delivers."""

    async def wait_for(self, condition: Callable[[], bool], within: float, what: str) -> None:
        try:
            async with asyncio.timeout(within), self.changed:
                await self.changed.wait_for(condition)
        except TimeoutError:
            raise BenchError(f"timed out after {within:g}s waiting for {what}") from None


class StepWatch(_Follower):
    """BuildSteps as the API server has them."""

    def __init__(self, client: BenchClient) -> None:
        super().__init__(client, BUILDSTEPS)

    def status(self, name: str) -> Json:
        return dict((self.objects.get(name) or {}).get("status") or {})

    def is_final(self, name: str) -> bool:
        return self.status(name).get("phase") in FINAL_PHASES

    async def wait_final(self, names: Sequence[str], within: float) -> dict[str, Json]:
        """Wait until every step has a final phase; return their statuses."""
        await self.wait_for(
            lambda: all(self.is_final(n) for n in names), within, f"{len(names)} steps to finish"
        )
        return {n: self.status(n) for n in names}

    async def wait_done(
        self, names: Sequence[str], within: float, poll: float = 0.2
    ) -> tuple[dict[str, Json], bool]:
        """`wait_final` for thousands of steps: polls those not final yet instead of checking
        every step at every event. Returns the statuses and whether all finished in time (a
        late step's status as it is: the caller reports it, a hang does not block the run)."""
        remaining = list(names)
        deadline = time.monotonic() + within
        while remaining and time.monotonic() < deadline:
            await asyncio.sleep(poll)
            remaining = [n for n in remaining if not self.is_final(n)]
        return {n: self.status(n) for n in names}, not remaining


class PoolWatch(_Follower):
    """AgentPools as the API server has them."""

    def __init__(self, client: BenchClient) -> None:
        super().__init__(client, AGENTPOOLS)
        # Every (pool, condition type, status) a watch event showed, with its last message.
        self.conditions_seen: dict[tuple[str, str, str], str] = {}

    def seen(self, name: str, obj: Json) -> None:
        for condition in (obj.get("status") or {}).get("conditions") or []:
            key = (name, str(condition.get("type")), str(condition.get("status")))
            self.conditions_seen[key] = str(condition.get("message") or "")

    def idle(self, name: str) -> int:
        status = (self.objects.get(name) or {}).get("status") or {}
        return int((status.get("agents") or {}).get("idle") or 0)

    async def wait_idle(self, wanted: Mapping[str, int], within: float) -> None:
        await self.wait_for(
            lambda: all(self.idle(p) >= n for p, n in wanted.items()),
            within,
            f"warm agents {dict(wanted)}",
        )


# --- objects and a whole bench -------------------------------------------------------------


def warm_pool_body(name: str, agents: int, **spec: Any) -> Json:
    """An AgentPool of `agents` agents kept warm (`minIdle` = `maxAgents`), plus `spec`."""
    return {
        "apiVersion": GROUP_VERSION,
        "kind": "AgentPool",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "minIdle": agents,
            "maxAgents": agents,
            "template": {"spec": {"containers": [{"name": "main", "image": "busybox"}]}},
            **spec,
        },
    }


def step_body(name: str, pool: str, build: str, order: int, script: str = "true") -> Json:
    return {
        "apiVersion": GROUP_VERSION,
        "kind": "BuildStep",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"pool": pool, "build": build, "order": order, "script": script},
    }


@dataclass(frozen=True)
class Testbed:
    """A fresh sandbox, the submitting client and its watches of steps and pools."""

    cluster: Cluster
    client: BenchClient
    steps: StepWatch
    pools: PoolWatch


@contextlib.asynccontextmanager
async def testbed(state_dir: Path, time_scale: float) -> AsyncIterator[Testbed]:
    async with (
        sandbox_process(state_dir, time_scale) as cluster,
        BenchClient(cluster) as client,
        StepWatch(client) as steps,
        PoolWatch(client) as pools,
    ):
        yield Testbed(cluster, client, steps, pools)


# --- reading the figures -------------------------------------------------------------------


@dataclass(frozen=True)
class StatsView:
    """Typed reads of a `/sandbox/v1/stats` document."""

    document: Json = field(repr=False)

    def requests(self, client: str = OPERATOR_CLIENT) -> int:
        by_client = self.document["requests"].get("byClient") or {}
        return int((by_client.get(client) or {}).get("total") or 0)

    def clients(self) -> dict[str, int]:
        """Requests per client (User-Agent)."""
        by_client = self.document["requests"].get("byClient") or {}
        return {client: int(counts.get("total") or 0) for client, counts in by_client.items()}

    def requests_by_resource(self, client: str = OPERATOR_CLIENT) -> dict[str, int]:
        """Requests of `client` per `resource verb` key (e.g. `pods/exec exec`)."""
        by_client = self.document["requests"].get("byClient") or {}
        resources = (by_client.get(client) or {}).get("byResource") or {}
        return {
            f"{resource} {verb}": int(count)
            for resource, verbs in resources.items()
            for verb, count in verbs.items()
        }

    def exec_opened(self, pool: str) -> int:
        by_pool = self.document["exec"].get("byPool") or {}
        return int((by_pool.get(f"{NAMESPACE}/{pool}") or {}).get("opened") or 0)

    def exec_open(self, pool: str) -> int:
        """Exec sessions open for `pool` now."""
        by_pool = self.document["exec"].get("byPool") or {}
        return int((by_pool.get(f"{NAMESPACE}/{pool}") or {}).get("current") or 0)

    def responses(self, code: int) -> int:
        """Responses with status `code` to every client (the sandbox counts codes overall)."""
        by_code = (self.document.get("responses") or {}).get("byCode") or {}
        return int(by_code.get(str(code)) or 0)

    def pool_peak(self, pool: str, client: str = OPERATOR_CLIENT) -> int:
        """Peak concurrent connections `client` held for `pool` (watches excluded)."""
        by_pool = self.document["connections"].get("byPool") or {}
        clients = (by_pool.get(f"{NAMESPACE}/{pool}") or {}).get("byClient") or {}
        return int((clients.get(client) or {}).get("peak") or 0)


def percentile(values: Iterable[float], fraction: float) -> float:
    """Nearest-rank percentile (`fraction` in 0..1); NaN for no values."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def parse_time(text: str | None) -> datetime | None:
    """An RFC 3339 time as the operator writes it (`...Z`, optional microseconds)."""
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
