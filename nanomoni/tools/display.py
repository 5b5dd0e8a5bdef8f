"""Terminal output shared by the demo and the load generator.

With `rich` installed (the `tools` extra) tables are drawn and progress bars
move; without it the same calls print plain lines, so `nanomoni demo` runs on
a plain install.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

try:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )
    from rich.table import Table
except ImportError:  # the plain install
    Console = None  # type: ignore[assignment,misc]

PIPED_WIDTH = 140
_MARKUP = re.compile(r"\[/?[a-z ]+\]")


class Tracker(Protocol):
    def add_task(self, description: str, total: int) -> Any: ...

    def advance(self, task: Any) -> None: ...

    def update(self, task: Any, completed: int) -> None: ...


class _Quiet:
    """Progress without rich: one line per task when it starts."""

    def add_task(self, description: str, total: int) -> str:
        print(f"{description}: {total} payments", flush=True)
        return description

    def advance(self, task: Any) -> None:
        pass

    def update(self, task: Any, completed: int) -> None:
        pass


class _Bar:
    """A rich progress bar behind the same three calls."""

    def __init__(self, progress: Any) -> None:
        self._progress = progress

    def add_task(self, description: str, total: int) -> Any:
        return self._progress.add_task(description, total=total)

    def advance(self, task: Any) -> None:
        self._progress.advance(task)

    def update(self, task: Any, completed: int) -> None:
        self._progress.update(task, completed=completed)


class Display:
    def __init__(self) -> None:
        self._console: Any = None
        if Console is not None:
            console = Console()
            # Piped output: rich would assume 80 columns and cut the mode names.
            self._console = console if console.is_terminal else Console(width=PIPED_WIDTH)

    def print(self, text: str) -> None:
        """A line; `[red]…[/red]` markup is dropped without rich."""
        if self._console is not None:
            self._console.print(text)
        else:
            print(_MARKUP.sub("", text), flush=True)

    @contextmanager
    def progress(self) -> Iterator[Tracker]:
        if self._console is None:
            yield _Quiet()
            return
        columns = (
            TextColumn("{task.description:<28}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=self._console) as bar:
            yield _Bar(bar)

    def table(self, title: str, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        """First column left-aligned, the others right-aligned."""
        if self._console is not None:
            table = Table(title=title)
            for n, name in enumerate(headers):
                table.add_column(name, justify="left" if n == 0 else "right")
            for row in rows:
                table.add_row(*row)
            self._console.print(table)
            return
        widths = [max(len(str(r[c])) for r in [headers, *rows]) for c in range(len(headers))]
        lines = [title]
        for row in [headers, *rows]:
            cells = [
                cell.ljust(w) if n == 0 else cell.rjust(w)
                for n, (cell, w) in enumerate(zip(row, widths, strict=True))
            ]
            lines.append("  ".join(cells))
        sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()
