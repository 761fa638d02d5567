"""The only place that prints.

Human mode: Rich tables for results on stdout, messages and progress on stderr.
JSON mode (`--json`): exactly one JSON document on stdout, whatever happens; messages still go to
stderr, progress bars are off. Library code never prints: it returns results or raises
`llmprod.errors.LlmprodError`, and takes an `Output` when it needs to report progress.
"""

from __future__ import annotations

import json
import math
import sys
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Iterator

from llmprod.memory.sizes import format_bytes  # noqa: F401 - re-exported: the commands' tables use it

if TYPE_CHECKING:
    from rich.console import Console

    from llmprod.errors import LlmprodError


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN/Infinity; a pipeline must still parse the document
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


class Output:
    def __init__(self, json_mode: bool = False) -> None:
        self.json_mode = json_mode
        self._emitted = False
        self._stdout: Console | None = None
        self._stderr: Console | None = None

    # Consoles are created lazily: importing rich.console costs start-up time.
    @property
    def stdout(self) -> Console:
        if self._stdout is None:
            from rich.console import Console

            self._stdout = Console(file=sys.stdout, highlight=False, soft_wrap=False)
        return self._stdout

    @property
    def stderr(self) -> Console:
        if self._stderr is None:
            from rich.console import Console

            self._stderr = Console(file=sys.stderr, highlight=False, soft_wrap=True)
        return self._stderr

    # -- messages (stderr) -------------------------------------------------------------------------
    def info(self, message: str) -> None:
        self.stderr.print(message, markup=False)

    def note(self, message: str) -> None:
        """A dimmed side remark (how something was estimated, what was chosen and why)."""
        self.stderr.print(f"[dim]{_escape(message)}[/dim]")

    def warn(self, message: str) -> None:
        self.stderr.print(f"[yellow]warning:[/yellow] {_escape(message)}")

    def error(self, err: LlmprodError) -> None:
        line = err.one_line()
        self.stderr.print(f"[red]error:[/red] {_escape(line)}", soft_wrap=True)
        if self.json_mode and not self._emitted:
            doc: dict[str, Any] = {"error": {"type": type(err).__name__, "message": line,
                                             "exit_code": err.exit_code}}
            result = getattr(err, "result", None)
            if result is not None:
                doc = {**result, **doc}
            self._write_json(doc)

    # -- results (stdout) --------------------------------------------------------------------------
    def result(self, data: dict[str, Any], render: Callable[[Console], None] | None = None) -> None:
        """Emit a command's result: `data` as JSON, or `render(console)` for people."""
        if self.json_mode:
            self._write_json(data)
            return
        if render is None:
            self.stdout.print(key_value_table(data))
        else:
            render(self.stdout)
        self._emitted = True

    def _write_json(self, doc: dict[str, Any]) -> None:
        if self._emitted:
            raise RuntimeError("a command emitted two results; --json allows exactly one document")
        sys.stdout.write(json.dumps(_jsonable(doc), indent=2, sort_keys=False) + "\n")
        sys.stdout.flush()
        self._emitted = True

    # -- progress (stderr, people only) ------------------------------------------------------------
    @contextmanager
    def progress(self, *columns: Any, transient: bool = True) -> Iterator[Any]:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn)

        if not self.json_mode and not self.stderr.is_terminal:
            # A log or a CI job: no live bar to redraw, so a plain line now and then says it is still working.
            yield LineProgress(self.stderr)
            return
        cols = columns or (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                           TimeElapsedColumn())
        disable = self.json_mode
        with Progress(*cols, console=self.stderr, transient=transient, disable=disable) as progress:
            yield progress


class LineProgress:
    """Rich's Progress calls (add_task, update) as a line on stderr at most every `every` seconds."""

    def __init__(self, console: "Console", every: float = 5.0) -> None:
        import time

        self.console, self.every, self.clock = console, every, time.monotonic
        self.started = self.last = self.clock()
        self.tasks: dict[int, Any] = {}

    def add_task(self, description: str, total: float | None = None, **_: Any) -> int:
        from types import SimpleNamespace

        started = self.clock()
        task = SimpleNamespace(description=description, total=total, completed=0, started=started)
        task.elapsed = 0.0
        self.tasks[len(self.tasks)] = task
        return len(self.tasks) - 1

    def update(self, task_id: int, **fields: Any) -> None:
        task = self.tasks[task_id]
        for key in ("description", "total", "completed"):
            if key in fields:
                setattr(task, key, fields[key])
        now = self.clock()
        task.elapsed = now - task.started
        if now - self.last < self.every:
            return
        self.last = now
        done = f" {task.completed:,.0f}/{task.total:,.0f}" if task.total else ""
        self.console.print(f"{task.description}{done} ({now - self.started:.0f} s)", markup=False, highlight=False)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def key_value_table(data: dict[str, Any], title: str | None = None):
    from rich.table import Table

    table = Table(title=title, show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in data.items():
        table.add_row(str(key), format_value(value))
    return table


def format_value(value: Any) -> str:
    if isinstance(value, float):
        if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-3):
            return f"{value:.4g}"
        return f"{value:,.4f}".rstrip("0").rstrip(".")
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)
