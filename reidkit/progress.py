"""Progress display: rich's bar on a terminal, plain periodic lines in logs, CI and pipes.

Rich draws nothing until the end when its console is not a terminal, so a job under ``nohup`` or
in CI would look stuck; :func:`progress` returns a :class:`LineProgress` there instead, which
prints a line at the start, at most every ``interval`` seconds, and at the end.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn
from rich.text import Text


class LineProgress:
    """The part of :class:`rich.progress.Progress` reidkit uses, printed as plain lines."""

    def __init__(self, console: Console, interval: float = 30.0, disable: bool = False) -> None:
        self.console, self.interval, self.disable = console, interval, disable
        self.tasks: list[dict[str, Any]] = []

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        for task in self.tasks:
            if task["printed_at"] != task["completed"]:
                self._print(task)

    def add_task(self, description: str, total: float | None = None, completed: float = 0,
                 **fields: Any) -> int:
        self.tasks.append({"description": description, "total": total, "completed": completed,
                           "fields": fields, "start": time.monotonic(), "start_at": completed,
                           "last": None, "printed_at": None})
        return len(self.tasks) - 1

    def advance(self, task_id: int, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    def update(self, task_id: int, *, completed: float | None = None, advance: float | None = None,
               **fields: Any) -> None:
        task = self.tasks[task_id]
        if completed is not None:
            task["completed"] = completed
        if advance is not None:
            task["completed"] += advance
        task["fields"].update(fields)
        now = time.monotonic()
        due = task["last"] is None or now - task["last"] >= self.interval
        if due or task["completed"] == task["total"]:
            self._print(task)

    def _print(self, task: dict[str, Any]) -> None:
        task["last"], task["printed_at"] = time.monotonic(), task["completed"]
        if self.disable:
            return
        done, total = task["completed"], task["total"]
        parts = [f"{task['description']}: {done:g}" + (f"/{total:g}" if total else "")]
        if total:
            parts[0] += f" ({100 * done / total:.0f}%)"
        elapsed = time.monotonic() - task["start"]
        rate = (done - task["start_at"]) / elapsed if elapsed > 0 else 0.0
        parts.append(f"{_clock(elapsed)} elapsed")
        if total and rate > 0 and done < total:
            parts.append(f"~{_clock((total - done) / rate)} left")
        status = task["fields"].get("status")
        if status:
            parts.append(str(status))
        self.console.print(", ".join(parts), highlight=False, soft_wrap=True)


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class _StatusColumn(ProgressColumn):
    """The task's ``status`` field, when it has one."""

    def render(self, task: Task) -> Text:
        return Text(str(task.fields.get("status", "")))


def progress(console: Console, *, disable: bool = False, transient: bool = False,
             interval: float = 30.0) -> Progress | LineProgress:
    """A progress display for ``console``: a rich bar on a terminal, else :class:`LineProgress`."""
    if not console.is_terminal:
        return LineProgress(console, interval, disable=disable)
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                    TextColumn("{task.completed}/{task.total}"), TimeRemainingColumn(),
                    _StatusColumn(), console=console, disable=disable,
                    transient=transient)
