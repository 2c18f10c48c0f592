"""progress: plain lines keep headers, output and results in order; the live view shows them too."""

from __future__ import annotations

import io

from rich.console import Console

from agentpool.builds import StepView
from agentpool.progress import LiveProgress, PlainProgress


def view(name: str, **status: object) -> StepView:
    return StepView.from_body(
        {
            "metadata": {"name": name, "uid": "u"},
            "spec": {"pool": "p", "build": "b", "script": "x"},
            "status": status,
        }
    )


def test_plain_lines_frame_each_steps_output() -> None:
    out = io.StringIO()
    progress = PlainProgress(out=out)

    progress.header(view("compile"), 1, 2)
    progress.waiting(view("compile", phase="Queued", reason="WaitingForAgent"))
    progress.output(b"compiling\nno newline at the end")
    progress.finished(view("compile", phase="Succeeded", exitCode=0, agent="a", startedAt="t"))
    progress.header(view("test"), 2, 2)
    progress.output("caf\u00e9\n".encode()[:4])  # a character split across two chunks
    progress.output("caf\u00e9\n".encode()[4:])
    progress.finished(view("test", phase="Skipped", reason="PreviousStepFailed"))

    assert out.getvalue() == (
        "==> [1/2] step compile (build b)\n"
        "    waiting: Queued: WaitingForAgent\n"
        "compiling\n"
        "no newline at the end\n"
        "<== step compile Succeeded (exit 0) on agent a\n"
        "==> [2/2] step test (build b)\n"
        "caf\u00e9\n"
        "<== step test Skipped: PreviousStepFailed\n"
    )


def test_the_live_view_prints_output_lines_and_a_table_of_steps() -> None:
    file = io.StringIO()
    console = Console(file=file, force_terminal=True, width=120, color_system=None)
    progress = LiveProgress(console)

    progress.refresh([view("compile"), view("test")])
    progress.header(view("compile"), 1, 2)
    progress.output(b"compiling\n")
    progress.finished(view("compile", phase="Succeeded", exitCode=0, agent="a", startedAt="t"))
    progress.refresh([view("test", phase="Running", agent="a")])
    progress.close()

    text = file.getvalue()
    assert "[1/2] step compile (build b)" in text
    assert "compiling\n" in text
    assert "step compile Succeeded (exit 0) on agent a" in text
    final_table = text[text.rindex("steps done") :]
    assert "steps done 1/2" in final_table
    assert final_table.index("compile") < final_table.index("test")
    assert "Running" in final_table
