"""Simulated kubelet: schedules pods and drives their status through data-driven profiles.

It watches pods in the store, binds each one to the virtual node `sandbox-node`, and plays the
pod's profile (annotation `sandbox.agentpool.dev/profile`) as successive status writes. When a
profile says containers run, their directories and processes exist before the status says so,
so that anyone reacting to the status can exec at once. Deleting a pod kills its processes.
It also serves the node-side subresources `pods/exec` and `pods/log`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import ipaddress
import logging
import os
import platform
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from agentpool_sandbox import attach, lifecycle, profiles, stats
from agentpool_sandbox import exec as exec_channel
from agentpool_sandbox.containers import (
    Container,
    ContainerRuntime,
    PodGone,
    previous_log_path,
)
from agentpool_sandbox.errors import ApiError

if TYPE_CHECKING:
    from agentpool_sandbox.cluster import Sandbox
    from agentpool_sandbox.store import Store

NODE_NAME = "sandbox-node"
HOST_IP = "127.0.0.1"
TIME_SCALE_ENV = "AGENTPOOL_SANDBOX_TIME_SCALE"
_POD_NETWORK = ipaddress.ip_network("10.244.0.0/16")
_LOG_POLL_SECONDS = 0.1
_TRUE = ("1", "true", "True")

log = logging.getLogger(__name__)


def time_scale(option: float | None) -> float:
    """Multiplier for every profile duration: the Sandbox option, else the environment, else 1."""
    if option is not None:
        return max(0.0, float(option))
    raw = os.environ.get(TIME_SCALE_ENV, "").strip()
    if not raw:
        return 1.0
    try:
        return max(0.0, float(raw))
    except ValueError:
        raise ValueError(f"{TIME_SCALE_ENV} must be a number, got {raw!r}") from None


def timestamp() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def unknown_profile_status(name: str, known: list[str]) -> dict[str, Any]:
    message = (
        f'sandbox profile "{name}" (annotation {profiles.PROFILE_ANNOTATION}) is not defined; '
        f"known profiles: {', '.join(known)}"
    )
    return {
        "phase": "Pending",
        "reason": "SandboxProfileNotFound",
        "message": message,
        "conditions": [
            {
                "type": "PodScheduled",
                "status": "False",
                "lastProbeTime": None,
                "lastTransitionTime": timestamp(),
                "reason": "SandboxProfileNotFound",
                "message": message,
            }
        ],
    }


def create_error_status(pod: Mapping[str, Any], message: str) -> dict[str, Any]:
    """Containers that cannot be created: waiting `CreateContainerError`, the pod Pending."""
    containers = (pod.get("spec") or {}).get("containers") or []
    now = timestamp()
    names = " ".join(str(c.get("name", "")) for c in containers)
    unready = f"containers with unready status: [{names}]"
    return {
        "phase": "Pending",
        "hostIP": HOST_IP,
        "hostIPs": [{"ip": HOST_IP}],
        "conditions": [
            {
                "type": "PodScheduled",
                "status": "True",
                "lastProbeTime": None,
                "lastTransitionTime": now,
            },
            {
                "type": "ContainersReady",
                "status": "False",
                "reason": "ContainersNotReady",
                "message": unready,
                "lastProbeTime": None,
                "lastTransitionTime": now,
            },
            {
                "type": "Ready",
                "status": "False",
                "reason": "ContainersNotReady",
                "message": unready,
                "lastProbeTime": None,
                "lastTransitionTime": now,
            },
        ],
        "containerStatuses": [
            {
                "name": c.get("name"),
                "image": c.get("image"),
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "started": False,
                "state": {"waiting": {"reason": "CreateContainerError", "message": message}},
                "lastState": {},
            }
            for c in containers
        ],
    }


def node_manifest() -> dict[str, Any]:
    now = timestamp()
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": NODE_NAME,
            "labels": {
                "kubernetes.io/hostname": NODE_NAME,
                "kubernetes.io/os": "linux",
                "type": "virtual-kubelet",
            },
        },
        "spec": {},
        "status": {
            "capacity": {"cpu": "64", "memory": "256Gi", "pods": "1000"},
            "allocatable": {"cpu": "64", "memory": "256Gi", "pods": "1000"},
            "addresses": [{"type": "InternalIP", "address": HOST_IP}],
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "sandbox kubelet is posting ready status",
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": now,
                }
            ],
            "nodeInfo": {
                "machineID": "sandbox",
                "systemUUID": "sandbox",
                "bootID": "sandbox",
                "kernelVersion": platform.release(),
                "osImage": "agentpool sandbox",
                "containerRuntimeVersion": "sandbox://local-processes",
                "kubeletVersion": "v1.37.0-sandbox",
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64" if platform.machine() == "x86_64" else platform.machine(),
            },
        },
    }


class Kubelet:
    """Plays profiles for every pod in the store and owns the pods' processes."""

    def __init__(
        self,
        store: Store,
        runtime: ContainerRuntime,
        profile_set: profiles.ProfileSet,
        scale: float,
    ) -> None:
        self.store = store
        self.runtime = runtime
        self.profiles = profile_set
        self.scale = scale
        self._drivers: dict[tuple[str, str], tuple[str, asyncio.Task[None]]] = {}
        self._addresses: dict[str, str] = {}
        self._next_address = 2

    def _pod_ip(self, uid: str) -> str:
        if uid not in self._addresses:
            self._addresses[uid] = str(_POD_NETWORK[self._next_address])
            self._next_address += 1
        return self._addresses[uid]

    async def run(self) -> None:
        self._register_node()
        async for kind, pod in self.store.subscribe("pods"):
            try:
                await self._handle(kind, pod)
            except Exception:
                log.exception("sandbox kubelet failed handling %s of a pod", kind)

    def _register_node(self) -> None:
        """Create the node, then post its status, as a kubelet registers itself."""
        manifest = node_manifest()
        status = manifest.pop("status")
        try:
            self.store.create("nodes", None, manifest)
            self.store.update_status(
                "nodes", None, NODE_NAME, lambda node: node.update(status=status)
            )
        except ApiError as error:
            log.warning("sandbox kubelet could not register node %s: %s", NODE_NAME, error.message)

    async def _handle(self, kind: str, pod: dict[str, Any]) -> None:
        metadata = pod.get("metadata") or {}
        key = (str(metadata.get("namespace", "")), str(metadata.get("name", "")))
        uid = str(metadata.get("uid", ""))
        if kind == "DELETED" or metadata.get("deletionTimestamp"):
            await self._forget(key, uid)
            return
        current = self._drivers.get(key)
        if current is not None and current[0] == uid:
            return
        if current is not None:
            await self._forget(key, current[0])
        task = asyncio.create_task(self._drive(pod), name=f"kubelet-{key[0]}/{key[1]}")
        self._drivers[key] = (uid, task)

    async def _forget(self, key: tuple[str, str], uid: str) -> None:
        current = self._drivers.get(key)
        if current is not None and current[0] == uid:
            del self._drivers[key]
            current[1].cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await current[1]
        self._addresses.pop(uid, None)
        await self.runtime.remove_pod(key[0], key[1], uid)

    async def _drive(self, pod: dict[str, Any]) -> None:
        metadata = pod["metadata"]
        namespace, name = metadata.get("namespace"), metadata["name"]
        profile_name = profiles.profile_name(pod)
        profile = self.profiles.get(profile_name)
        try:
            if profile is None:
                status = unknown_profile_status(profile_name, self.profiles.names())
                self.store.update_status("pods", namespace, name, lambda o: _set_status(o, status))
                return
            await self._play(pod, profile)
        except PodGone:
            return
        except ApiError as error:
            if error.code != 404:
                raise
        except (OSError, ValueError) as error:
            # The pod's own spec broke the container's start (say, a NUL byte in workingDir):
            # a node reports CreateContainerError and keeps the pod Pending.
            log.info(
                "sandbox kubelet cannot start a container of %s/%s: %s", namespace, name, error
            )
            failed = create_error_status(pod, str(error))
            with contextlib.suppress(ApiError):
                self.store.update_status("pods", namespace, name, lambda o: _set_status(o, failed))

    async def _play(self, pod: dict[str, Any], profile: profiles.Profile) -> None:
        metadata = pod["metadata"]
        namespace, name = metadata.get("namespace"), metadata["name"]
        history = profiles.PodHistory()
        pod_ip = self._pod_ip(str(metadata.get("uid", "")))
        steps = profile.timeline(profiles.pod_rng(pod))
        step = next(steps, None)
        while step is not None:
            current = self.store.get("pods", namespace, name)
            if current["metadata"].get("uid") != metadata.get("uid"):
                return
            await self._apply_containers(current, step, history, pod_ip)
            status = profiles.render_status(
                current, step, history, now=timestamp(), pod_ip=pod_ip, host_ip=HOST_IP
            )
            self.store.update_status(
                "pods",
                namespace,
                name,
                functools.partial(_set_status, status=status, scheduled=step.scheduled),
            )
            following = next(steps, None)
            # The last step of a profile without a loop holds for good.
            hold = step.duration * self.scale if following is not None else None
            if step.containers.state == "running":
                if await self._until_exit(current, hold):
                    # A main process exited by itself: the real outcome takes over.
                    await self._run_after_exit(current, history)
                    return
            elif hold is not None:
                await asyncio.sleep(hold)
            step = following

    def _containers(self, pod: dict[str, Any]) -> list[tuple[str, Container | None]]:
        namespace, name = pod["metadata"].get("namespace"), pod["metadata"]["name"]
        return [
            (container, self.runtime.container(namespace, name, container))
            for container in exec_channel.container_names(pod)
        ]

    async def _until_exit(self, pod: dict[str, Any], hold: float | None) -> bool:
        """Wait `hold` seconds (None: for good); True as soon as a main process exits."""
        waiters = [r.main.waiter for _, r in self._containers(pod) if r and r.main is not None]
        if not waiters:
            if hold is not None:
                await asyncio.sleep(hold)
            return False
        done, _ = await asyncio.wait(waiters, timeout=hold, return_when=asyncio.FIRST_COMPLETED)
        return bool(done)

    async def _run_after_exit(self, pod: dict[str, Any], history: profiles.PodHistory) -> None:
        """Containers exit, restart (with back-off) or stay down as `restartPolicy` says."""
        metadata = pod["metadata"]
        namespace, name, uid = metadata.get("namespace"), metadata["name"], metadata.get("uid")
        policy = lifecycle.restart_policy(pod)
        images = {
            str(c.get("name")): str(c.get("image", ""))
            for c in (pod.get("spec") or {}).get("containers") or []
        }
        previous = history.last_terminated
        last = {k: v for k, v in previous.items() if k != "restart"} if previous else None

        def container_id(container: str, restarts: int) -> str:
            return f"sandbox://{str(uid)[:8]}-{container}-{restarts}"

        runs = [
            lifecycle.ContainerRun(
                name=container,
                image=images.get(container, ""),
                restart_count=history.restart_count,
                started_at=history.started_at,
                last_terminated=last,
                container_ids=[container_id(container, history.restart_count)],
            )
            for container in exec_channel.container_names(pod)
        ]
        backoffs: dict[str, float] = {}
        deadlines: dict[str, float] = {}
        loop = asyncio.get_running_loop()

        def publish() -> None:
            now = timestamp()

            def mutate(obj: dict[str, Any]) -> None:
                obj["status"] = lifecycle.pod_status(
                    obj.get("status") or {}, obj, runs, backoffs, now
                )

            self.store.update_status("pods", namespace, name, mutate)

        while True:
            exits = False
            for run in runs:
                record = self.runtime.container(namespace, name, run.name)
                main = record.main if record is not None else None
                if run.state == "running" and main is not None and main.waiter.done():
                    wait = lifecycle.exited(run, main.waiter.result(), timestamp(), policy)
                    exits = True
                    if wait is not None:
                        backoffs[run.name] = wait
                        deadlines[run.name] = (
                            loop.time() + wait * lifecycle.BACKOFF_SCALE * self.scale
                        )
            if exits:
                publish()
            if lifecycle.phase(runs) != "Running":
                return
            due = [r for r in runs if r.state == "backoff" and deadlines[r.name] <= loop.time()]
            for run in due:
                current = self.store.get("pods", namespace, name)
                await self.runtime.start(current, run.name)
                lifecycle.restarted(run, timestamp(), container_id(run.name, run.restart_count + 1))
            if due:
                publish()
            waiters = []
            for run in runs:
                record = self.runtime.container(namespace, name, run.name)
                if run.state == "running" and record is not None and record.main is not None:
                    waiters.append(record.main.waiter)
            pending = [deadlines[r.name] - loop.time() for r in runs if r.state == "backoff"]
            timeout = max(0.0, min(pending)) if pending else None
            if not waiters and timeout is None:
                return  # what still runs has no process: nothing can change any more
            if waiters:
                await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            else:
                await asyncio.sleep(timeout or 0.0)

    async def _apply_containers(
        self, pod: dict[str, Any], step: profiles.Step, history: profiles.PodHistory, pod_ip: str
    ) -> None:
        """Start or stop processes before publishing the status that announces it."""
        namespace, name = pod["metadata"].get("namespace"), pod["metadata"]["name"]
        names = exec_channel.container_names(pod)
        was_running = history.previous_state == "running"
        state = step.containers.state
        if state == "running" and (not was_running or step.containers.restart):
            pod.setdefault("status", {})["podIP"] = pod_ip
            for container in names:
                await self.runtime.start(pod, container)
        elif state != "running" and was_running:
            for container in names:
                record = self.runtime.container(namespace, name, container)
                if record is not None:
                    await self.runtime.stop(record)

    async def close(self) -> None:
        for key, (uid, _) in list(self._drivers.items()):
            await self._forget(key, uid)
        await self.runtime.close()


def _set_status(obj: dict[str, Any], status: Mapping[str, Any], scheduled: bool = False) -> None:
    if scheduled and not obj.setdefault("spec", {}).get("nodeName"):
        obj["spec"]["nodeName"] = NODE_NAME
    obj["status"] = dict(status)


# --- HTTP: pods/exec and pods/log -------------------------------------------------------


@dataclass
class KubeletSlot:
    """Filled at startup: the store and state directory exist only once the Sandbox runs."""

    kubelet: Kubelet | None = None

    def get(self) -> Kubelet:
        if self.kubelet is None:
            raise ApiError(503, "ServiceUnavailable", "the sandbox kubelet is not running")
        return self.kubelet


KUBELET_KEY = web.AppKey("sandbox_kubelet", KubeletSlot)


def _error_response(error: ApiError) -> web.Response:
    return web.json_response(error.status(), status=error.code)


async def exec_handler(request: web.Request) -> web.StreamResponse:
    try:
        kubelet = request.app[KUBELET_KEY].get()
        pod = kubelet.store.get("pods", request.match_info["namespace"], request.match_info["name"])
        return await exec_channel.serve(
            request,
            pod,
            kubelet.runtime,
            request.app.get(stats.STATS_KEY),
            stats.exec_drop_after(request.app),
        )
    except ApiError as error:
        return _error_response(error)


async def attach_handler(request: web.Request) -> web.StreamResponse:
    try:
        kubelet = request.app[KUBELET_KEY].get()
        pod = kubelet.store.get("pods", request.match_info["namespace"], request.match_info["name"])
        return await attach.serve(request, pod, kubelet.runtime)
    except ApiError as error:
        return _error_response(error)


def _int_param(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "BadRequest", f"invalid {name}: {raw!r} is not an integer") from None
    if value < 0:
        raise ApiError(400, "BadRequest", f"{name} must be greater than or equal to 0")
    return value


def tail(data: bytes, lines: int | None) -> bytes:
    """The last `lines` lines of `data` (a final line without newline counts as one)."""
    if lines is None:
        return data
    if lines == 0:
        return b""
    parts = data.splitlines(keepends=True)
    return b"".join(parts[-lines:])


def _waiting_reason(pod: Mapping[str, Any], container: str) -> str:
    for entry in (pod.get("status") or {}).get("containerStatuses") or []:
        if entry.get("name") == container:
            waiting = (entry.get("state") or {}).get("waiting")
            if waiting:
                return str(waiting.get("reason", "ContainerCreating"))
    return "ContainerCreating"


async def log_handler(request: web.Request) -> web.StreamResponse:
    namespace, name = request.match_info["namespace"], request.match_info["name"]
    try:
        kubelet = request.app[KUBELET_KEY].get()
        pod = kubelet.store.get("pods", namespace, name)
        container = exec_channel.select_container(pod, request.query.get("container") or None)
        previous = request.query.get("previous", "") in _TRUE
        tail_lines = _int_param(request, "tailLines")
        limit = _int_param(request, "limitBytes")
        record = kubelet.runtime.container(namespace, name, container)
        if previous and (record is None or not previous_log_path(record.log_path).exists()):
            raise ApiError(
                400,
                "BadRequest",
                f'previous terminated container "{container}" in pod "{name}" not found',
            )
        if record is None:
            raise ApiError(
                400,
                "BadRequest",
                f'container "{container}" in pod "{name}" is waiting to start: '
                f"{_waiting_reason(pod, container)}",
            )
    except ApiError as error:
        return _error_response(error)
    path = previous_log_path(record.log_path) if previous else record.log_path
    data = tail(await asyncio.to_thread(_read, path), tail_lines)
    if limit is not None:
        data = data[:limit]
    if previous or request.query.get("follow", "") not in _TRUE:
        return web.Response(body=data, content_type="text/plain", charset="utf-8")
    return await _follow(request, kubelet, record, data, limit)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


async def _follow(
    request: web.Request, kubelet: Kubelet, record: Container, initial: bytes, limit: int | None
) -> web.StreamResponse:
    """Stream the log as it grows until the container ends, the pod goes or the client leaves."""
    response = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
    await response.prepare(request)
    sent = len(initial)
    await response.write(initial)
    namespace, name = request.match_info["namespace"], request.match_info["name"]
    try:
        offset = record.log_path.stat().st_size
    except FileNotFoundError:
        return response
    while limit is None or sent < limit:
        alive = kubelet.runtime.container(namespace, name, record.name) is record
        finished = record.main is not None and record.main.waiter.done()
        try:
            size = record.log_path.stat().st_size
        except FileNotFoundError:
            break
        if size > offset:
            with record.log_path.open("rb") as handle:
                handle.seek(offset)
                chunk = handle.read(size - offset)
            offset = size
            if limit is not None:
                chunk = chunk[: limit - sent]
            sent += len(chunk)
            try:
                await response.write(chunk)
            except ConnectionError:
                break
            continue
        client_gone = request.transport is None or request.transport.is_closing()
        if not alive or finished or client_gone:
            break
        await asyncio.sleep(_LOG_POLL_SECONDS)
    with contextlib.suppress(ConnectionError):
        await response.write_eof()
    return response


def install(app: web.Application, sandbox: Sandbox) -> None:
    """Add exec/log routes and start/stop hooks for the simulated kubelet."""
    slot = KubeletSlot()
    app[KUBELET_KEY] = slot
    pod_path = "/api/v1/namespaces/{namespace}/pods/{name}"
    app.router.add_route("GET", pod_path + "/exec", exec_handler)
    app.router.add_route("POST", pod_path + "/exec", exec_handler)
    app.router.add_route("GET", pod_path + "/log", log_handler)
    app.router.add_route("GET", pod_path + "/attach", attach_handler)
    app.router.add_route("POST", pod_path + "/attach", attach_handler)

    async def lifecycle(app: web.Application) -> Any:
        profile_set = profiles.load(sandbox.profiles_file)
        scale = time_scale(getattr(sandbox, "time_scale", None))
        kubelet = Kubelet(
            sandbox.store, ContainerRuntime(Path(sandbox.state_dir)), profile_set, scale
        )
        slot.kubelet = kubelet
        task = asyncio.create_task(kubelet.run(), name="sandbox-kubelet")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        slot.kubelet = None
        await kubelet.close()

    app.cleanup_ctx.append(lifecycle)
