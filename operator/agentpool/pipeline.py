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
from datetime import UTC, datetime
from typing import Any

from kubernetes_asyncio.client import CustomObjectsApi
from kubernetes_asyncio.client.exceptions import ApiException

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
REFRESH_SECONDS = 1.0


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
    """The build's steps in order, and their bodies; BuildNotFound when there are none."""
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
    """Each step's output under a header, in the order given; the build's verdict."""
    progress.refresh(steps)
    refresher = asyncio.create_task(_refresh(follower, progress, [s.name for s in steps]))
    finals: list[StepView] = []
    try:
        for index, step in enumerate(steps, 1):
            progress.header(step, index, len(steps))
            if follow:
                final = await follower.follow(step.name, on_wait=progress.waiting)
            else:
                final = await follower.print_log(step.name)
            finals.append(final)
            progress.finished(final)
    finally:
        refresher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await refresher
    return verdict(finals)


async def _refresh(follower: StepFollower, progress: Progress, names: Sequence[str]) -> None:
    """Keep the live view's table current (plain progress ignores it)."""
    wanted = set(names)
    while True:
        with contextlib.suppress(FollowError, OSError):
            views = await list_steps(follower.clients, follower.namespace)
            progress.refresh([v for v in views if v.name in wanted])
        await asyncio.sleep(REFRESH_SECONDS)


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
    return format_rows(build_rows(steps, datetime.now(UTC)))


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
