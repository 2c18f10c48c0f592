"""Where a build's progress goes: plain lines for CI logs, a rich live view on a terminal.

Both show each step's output in order under a header and its result after it. Plain lines
go to stdout with the output, so that a CI log keeps them in order; the live view adds a
table of the build's steps (phase, exit code, agent) kept at the bottom of the terminal.
"""

from __future__ import annotations

import codecs
import sys
import time
from collections.abc import Sequence
from typing import Protocol, TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.rule import Rule
from rich.table import Table
from rich.text import Text

from agentpool.builds import StepView, in_order, status_line, waiting_for

__all__ = ["LiveProgress", "PlainProgress", "Progress", "make_progress"]

PHASE_STYLES = {
    "Succeeded": "green",
    "Failed": "red",
    "Skipped": "yellow",
    "Cancelled": "magenta",
    "Running": "cyan",
}


class Progress(Protocol):
    """Where a build's progress goes: plain lines for CI logs, a live view on a terminal."""

    def header(self, step: StepView, index: int, total: int) -> None: ...
    def output(self, data: bytes) -> None: ...
    def waiting(self, step: StepView) -> None: ...
    def finished(self, step: StepView) -> None: ...
    def note(self, text: str) -> None: ...
    def refresh(self, steps: Sequence[StepView]) -> None: ...
    def close(self) -> None: ...


class PlainProgress:
    """Lines for logs that are not a terminal: a header before each step's output, the
    step's result after it, all on `out` so that they stay in order with the output."""

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._at_line_start = True

    def _line(self, text: str) -> None:
        if not self._at_line_start:
            self.out.write("\n")
        self.out.write(text + "\n")
        self.out.flush()
        self._at_line_start = True

    def header(self, step: StepView, index: int, total: int) -> None:
        self._line(f"==> [{index}/{total}] step {step.name} (build {step.build})")

    def output(self, data: bytes) -> None:
        text = self._decoder.decode(data)
        if text:
            self.out.write(text)
            self.out.flush()
            self._at_line_start = text.endswith("\n")

    def waiting(self, step: StepView) -> None:
        self._line(f"    waiting: {waiting_for(step)}")

    def finished(self, step: StepView) -> None:
        tail = self._decoder.decode(b"", final=True)
        if tail:
            self.output(tail.encode())
        self._line(f"<== {status_line(step)}")

    def note(self, text: str) -> None:
        self._line(f"    {text}")

    def refresh(self, steps: Sequence[StepView]) -> None:
        pass

    def close(self) -> None:
        self.out.flush()


class LiveProgress:
    """A terminal: output lines scroll above a live table of the build's steps."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._partial = ""
        self._steps: dict[str, StepView] = {}
        self._given: list[str] = []  # the order the steps are shown in
        self._current: str | None = None
        self._started = time.monotonic()
        # Rendered afresh at each refresh, so that the elapsed time moves between updates.
        self._live = Live(
            console=self.console,
            refresh_per_second=4,
            transient=False,
            get_renderable=self._render,
        )
        self._live.start()

    def _render(self) -> RenderableType:
        table = Table(show_edge=False, box=None, padding=(0, 2))
        for column in ("", "Step", "Build", "Phase", "Exit", "Agent", "Why"):
            table.add_column(column)
        for step in self._steps.values():
            why = "" if step.phase in ("Succeeded", "Running") else (step.reason or "")
            table.add_row(
                "▶" if step.name == self._current and not step.is_final else "",
                step.name,
                step.build,
                Text(step.shown_phase, style=PHASE_STYLES.get(step.shown_phase, "dim")),
                "" if step.exit_code is None else str(step.exit_code),
                step.agent or "",
                why,
            )
        done = sum(1 for s in self._steps.values() if s.is_final)
        elapsed = time.monotonic() - self._started
        line = Text.assemble(
            (f"{elapsed:5.1f}s  ", "dim"), ("steps done ", "bold"), f"{done}/{len(self._steps)}"
        )
        return Group(Rule(style="dim"), line, table)

    def _update(self) -> None:
        self._live.refresh()

    def _print_lines(self, text: str) -> None:
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            self.console.print(Text(line), soft_wrap=True)

    def header(self, step: StepView, index: int, total: int) -> None:
        self._current = step.name
        if step.name not in self._steps:
            self._given.append(step.name)
            self._steps[step.name] = step
        self.console.print(Rule(f"[{index}/{total}] step {step.name} (build {step.build})"))
        self._update()

    def output(self, data: bytes) -> None:
        self._print_lines(self._decoder.decode(data))

    def waiting(self, step: StepView) -> None:
        self._steps[step.name] = step
        self._update()

    def finished(self, step: StepView) -> None:
        self._print_lines(self._decoder.decode(b"", final=True) + ("\n" if self._partial else ""))
        self._steps[step.name] = step
        style = PHASE_STYLES.get(step.shown_phase, "")
        self.console.print(Text(status_line(step), style=f"bold {style}".strip()))
        self._update()

    def note(self, text: str) -> None:
        self.console.print(Text(text, style="dim"))

    def refresh(self, steps: Sequence[StepView]) -> None:
        if not self._given:
            self._given = [step.name for step in steps]
        known = {**self._steps, **{step.name: step for step in steps}}
        self._steps = {step.name: step for step in in_order(known.values(), self._given)}
        self._update()

    def close(self) -> None:
        if self._partial:
            self._print_lines("\n")
        self._update()
        self._live.stop()


def make_progress() -> Progress:
    """The live view when stdout is a terminal, plain lines otherwise (CI logs, pipes)."""
    if sys.stdout.isatty():
        return LiveProgress()
    return PlainProgress()
