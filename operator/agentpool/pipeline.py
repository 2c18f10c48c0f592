"""`agentpool build run|list|logs|cancel|rerun`: what a CI pipeline calls (I/O; decisions in
`builds`).

`build run` creates the steps, shows each one's output in order under a header, reports the
steps that were skipped, and returns the exit code `builds.verdict` decides. Cancelling sets
the annotation `agentpool.dev/cancel: "true"` on every step of the build that is not final:
the operator then stops the running step (`Cancelled`) and skips the later OnSuccess steps.

Steps carry no label naming their build: the steps of a build are found by reading
`spec.build` of the namespace's BuildSteps (a field selector on a custom resource's spec is
not served by every API server).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from kubernetes_asyncio.client import CustomObjectsApi
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.watch import Watch

from agentpool.builds import (
    CANCEL_ANNOTATION,
    BuildRow,
    StepView,
    Verdict,
    build_rows,
    in_order,
    rerun_body,
    verdict,
)
from agentpool.follow import FollowError, StepFollower, api_failure
from agentpool.kube import client as kube
from agentpool.progress import Progress
from agentpool.timestamps import now

__all__ = [
    "BuildNotFound",
    "cancel_build",
    "create_steps",
    "format_rows",
    "list_steps",
    "new_build_name",
    "rerun_bodies",
    "show_build",
]

MERGE_PATCH = "application/merge-patch+json"
CANCEL_WITHIN = 15.0
# Server-side bound of one watch request; the watch is then resumed from a fresh list.
WATCH_SECONDS = 60


class BuildNotFound(Exception):
    """No BuildStep of the namespace belongs to the build."""


# --- reading and writing steps ------------------------------------------------------------


async def list_steps(clients: kube.KubeClients, namespace: str) -> list[StepView]:
    try:
        bodies = await kube.list_objects(clients.api, kube.BUILDSTEPS, namespace)
    except ApiException as error:
        raise FollowError(api_failure(error)) from None
    return [StepView.from_body(body) for body in bodies]


async def build_steps(
    clients: kube.KubeClients, namespace: str, build: str
) -> tuple[list[StepView], list[dict[str, Any]]]:
    """The build's steps in order, and their bodies; BuildNotFound when there are none.

    The CRD declares spec.build a selectable field (Kubernetes 1.31+): the API server then
    sends only the build's steps. An older server refuses the selector, and a step without
    spec.build is a build of its own that no selector finds: both fall back to reading the
    whole namespace.
    """
    mine: list[dict[str, Any]] = []
    try:
        selected = await CustomObjectsApi(clients.api).list_namespaced_custom_object(
            kube.GROUP,
            kube.VERSION,
            namespace,
            kube.BUILDSTEPS,
            field_selector=f"spec.build={build}",
        )
        mine = list(selected.get("items") or [])
    except ApiException as error:
        if error.status != 400:
            raise FollowError(api_failure(error)) from None
    if not mine:
        try:
            bodies = await kube.list_objects(clients.api, kube.BUILDSTEPS, namespace)
        except ApiException as error:
            raise FollowError(api_failure(error)) from None
        mine = [b for b in bodies if StepView.from_body(b).build == build]
    if not mine:
        raise BuildNotFound(
            f"no BuildStep of namespace {namespace} has spec.build {build!r}: "
            "`agentpool build list` shows the builds"
        )
    views = in_order(StepView.from_body(b) for b in mine)
    by_name = {str(b["metadata"]["name"]): b for b in mine}
    return views, [by_name[v.name] for v in views]


async def create_steps(
    clients: kube.KubeClients, namespace: str, bodies: Sequence[dict[str, Any]]
) -> list[StepView]:
    """Create the steps in the order given; the created steps (names generated, if asked)."""
    objects = CustomObjectsApi(clients.api)
    created: list[StepView] = []
    for body in bodies:
        meta = body["metadata"]
        try:
            result = await objects.create_namespaced_custom_object(
                kube.GROUP, kube.VERSION, namespace, kube.BUILDSTEPS, body
            )
        except ApiException as error:
            what = meta.get("name") or f"{meta.get('generateName')}*"
            if created:
                await cancel_steps(clients, namespace, created)
            done = f" (cancelled the {len(created)} created before it)" if created else ""
            raise FollowError(
                f"creating BuildStep {namespace}/{what} failed: {_refusal(error)}{done}"
            ) from None
        created.append(StepView.from_body(result))
    return created


def _refusal(error: ApiException) -> str:
    import json  # noqa: PLC0415

    try:
        message = json.loads(error.body or "{}").get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message) if message else api_failure(error)


async def cancel_steps(
    clients: kube.KubeClients, namespace: str, steps: Iterable[StepView]
) -> list[str]:
    """Annotate each step that is not final (nor already asked); the names annotated."""
    objects = CustomObjectsApi(clients.api)
    patch: Any = objects.patch_namespaced_custom_object  # `_content_type` is not in the stub
    annotated: list[str] = []
    for step in steps:
        if step.is_final or step.cancel_asked:
            continue
        try:
            await patch(
                kube.GROUP,
                kube.VERSION,
                namespace,
                kube.BUILDSTEPS,
                step.name,
                {"metadata": {"annotations": {CANCEL_ANNOTATION: "true"}}},
                _content_type=MERGE_PATCH,
            )
        except ApiException as error:
            if error.status == 404:
                continue  # deleted meanwhile: nothing left to cancel
            raise FollowError(f"cancelling step {step.name} failed: {api_failure(error)}") from None
        annotated.append(step.name)
    return annotated


async def cancel_build(clients: kube.KubeClients, namespace: str, build: str) -> list[str]:
    views, _ = await build_steps(clients, namespace, build)
    return await cancel_steps(clients, namespace, views)


async def cancel_builds(
    clients: kube.KubeClients, namespace: str, builds: Iterable[str]
) -> list[str]:
    wanted = set(builds)
    views = [v for v in await list_steps(clients, namespace) if v.build in wanted]
    # The running step first: the operator then skips the later ones (PreviousStepCancelled).
    return await cancel_steps(clients, namespace, in_order(views))


# --- showing builds -----------------------------------------------------------------------


async def show_build(
    follower: StepFollower,
    progress: Progress,
    steps: Sequence[StepView],
    *,
    follow: bool,
) -> Verdict:
    """Each step's output under a header, in the order given; the build's verdict.

    Following, every step's output is captured from the moment it may start (so that the
    output of a quick step is caught before the operator removes its files once the build
    moves on) and shown in order: the step being shown streams, the next ones are held.
    """
    progress.refresh(steps)
    if not follow:
        finals: list[StepView] = []
        for index, step in enumerate(steps, 1):
            progress.header(step, index, len(steps))
            final = await follower.print_log(step.name)
            finals.append(final)
            progress.finished(final)
        return verdict(finals)
    return await _BuildShow(follower, progress, steps).run()


@dataclass
class _Capture:
    """One step's output as captured so far, and how the step ended."""

    chunks: list[bytes] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    final: StepView | None = None
    task: asyncio.Task[None] | None = None


class _BuildShow:
    # How many steps not yet final are captured at once: the running one and the next (the
    # operator runs a build's steps one after the other).
    AHEAD = 2

    def __init__(self, follower: StepFollower, progress: Progress, steps: Sequence[StepView]):
        self.follower = follower
        self.progress = progress
        self.steps = list(steps)
        self.views = {step.name: step for step in steps}
        self.captures: dict[str, _Capture] = {}
        self.changed = asyncio.Event()

    async def run(self) -> Verdict:
        watcher = asyncio.create_task(self._watch(), name="build-watch")
        try:
            finals = [await self._show(index, step) for index, step in enumerate(self.steps, 1)]
        finally:
            pending = [watcher] + [c.task for c in self.captures.values() if c.task is not None]
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        return verdict(finals)

    async def _agent_of(self, step: StepView) -> str | None:
        return self._build_agent(step.build)

    def _build_agent(self, build: str) -> str | None:
        """Where the build runs: the agent of its latest step that has one."""
        placed = [s for s in in_order(self.views.values()) if s.build == build and s.agent]
        return placed[-1].agent if placed else None

    async def _watch(self) -> None:
        """Keep the views current from a watch of the namespace's BuildSteps: a step is
        captured the moment it is placed, not at the next poll (a quick step's files live
        only until its build moves on)."""
        objects = CustomObjectsApi(self.follower.clients.api)
        namespace = self.follower.namespace
        while True:
            try:
                listing = await objects.list_namespaced_custom_object(
                    kube.GROUP, kube.VERSION, namespace, kube.BUILDSTEPS
                )
                self._seen(listing.get("items") or [])
                version = (listing.get("metadata") or {}).get("resourceVersion")
                async with Watch().stream(
                    objects.list_namespaced_custom_object,
                    kube.GROUP,
                    kube.VERSION,
                    namespace,
                    kube.BUILDSTEPS,
                    resource_version=version,
                    timeout_seconds=WATCH_SECONDS,
                ) as events:
                    async for event in events:
                        if event.get("type") in ("ADDED", "MODIFIED"):
                            self._seen([event["raw_object"]])
            except (ApiException, aiohttp.ClientError, OSError, TimeoutError, ValueError):
                # Expired (410), dropped or refused: list again after a pause; the captures'
                # own reads report what stays wrong.
                await asyncio.sleep(self.follower.poll)

    def _seen(self, bodies: Iterable[dict[str, Any]]) -> None:
        for body in bodies:
            view = StepView.from_body(body)
            if view.name in self.views:
                self.views[view.name] = view
        self.progress.refresh([self.views[s.name] for s in self.steps])
        ahead = 0
        for step in self.steps:
            view = self.views[step.name]
            if not view.is_final:
                ahead += 1
            if step.name in self.captures or (view.is_final and not view.has_started):
                continue
            if view.has_started or (ahead <= self.AHEAD and self._build_agent(view.build)):
                self._capture(view)
        self.changed.set()

    def _capture(self, step: StepView) -> None:
        capture = _Capture()
        self.captures[step.name] = capture

        def write(data: bytes) -> None:
            capture.chunks.append(data)
            self.changed.set()

        def note(text: str) -> None:
            capture.notes.append(text)
            self.changed.set()

        follower = StepFollower(
            self.follower.clients,
            self.follower.namespace,
            write,
            note,
            state_dir=self.follower.state_dir,
            poll=self.follower.poll,
        )

        async def capture_output() -> None:
            capture.final = await follower.follow(
                step.name,
                on_wait=lambda _: None,
                agent_hint=self._agent_of,
            )
            self.changed.set()

        capture.task = asyncio.create_task(capture_output(), name=f"capture-{step.name}")

    async def _show(self, index: int, step: StepView) -> StepView:
        self.progress.header(step, index, len(self.steps))
        shown = noted = 0
        waiting: tuple[str | None, str | None] | None = None
        while True:
            self.changed.clear()
            capture = self.captures.get(step.name)
            view = self.views[step.name]
            if capture is not None:
                for data in capture.chunks[shown:]:
                    self.progress.output(data)
                shown = len(capture.chunks)
                for text in capture.notes[noted:]:
                    self.progress.note(text)
                noted = len(capture.notes)
                if capture.task is not None and capture.task.done():
                    capture.task.result()  # raises what stopped the capture
                    assert capture.final is not None
                    self.progress.finished(capture.final)
                    return capture.final
            elif view.is_final and not view.has_started:
                self.progress.finished(view)
                return view
            # Later steps have no phase until their turn comes: only a phase is news there.
            quiet = view.phase is None and index > 1
            news = (view.phase, view.reason) != waiting
            if not shown and not view.has_started and not view.is_final and not quiet and news:
                waiting = (view.phase, view.reason)
                self.progress.waiting(view)
            await self.changed.wait()


def format_rows(rows: Sequence[BuildRow]) -> str:
    """Columns as kubectl prints them: upper-case headers, two spaces between columns."""
    table = [("BUILD", "POOL", "PHASE", "STEPS", "AGENT", "STARTED", "DURATION")]
    table += [
        (r.build, r.pool, r.phase, f"{r.done}/{r.total}", r.agent, r.started, r.duration)
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    return "\n".join(
        "   ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in table
    )


async def build_table(clients: kube.KubeClients, namespace: str) -> str | None:
    steps = await list_steps(clients, namespace)
    if not steps:
        return None
    return format_rows(build_rows(steps, now()))


# --- re-running ---------------------------------------------------------------------------


def new_build_name(build: str) -> str:
    suffix = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(5))
    return f"{build[: 253 - 6]}-{suffix}"


async def rerun_bodies(
    clients: kube.KubeClients, namespace: str, build: str, new_build: str
) -> list[dict[str, Any]]:
    """Manifests of a new build with the specs of `build`'s steps, in their order."""
    _, bodies = await build_steps(clients, namespace, build)
    return [rerun_body(body, new_build) for body in bodies]
