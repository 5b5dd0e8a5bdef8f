"""Terminal output shared by the demo and the load generator."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

PIPED_WIDTH = 140


def make_console() -> Console:
    console = Console()
    # Piped output: rich would assume 80 columns and cut the mode names.
    return console if console.is_terminal else Console(width=PIPED_WIDTH)


def make_progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description:<28}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
