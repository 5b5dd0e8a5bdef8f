"""CPU time of a process and its descendants, from /proc (Linux)."""

from __future__ import annotations

import os
from pathlib import Path

PROC = Path("/proc")
TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:  # the process ended meanwhile
        return None
    # The command name (field 2) may contain spaces: split after its closing paren.
    return text[text.rindex(")") + 2 :].split()


def process_tree(pid: int) -> list[int]:
    """pid and every live descendant (service workers are child processes)."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, frontier = [pid], [pid]
    while frontier:
        frontier = [child for parent in frontier for child in children.get(parent, [])]
        tree += frontier
    return tree


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of pid and its live descendants."""
    total = 0
    for member in process_tree(pid):
        fields = _stat_fields(member)
        if fields is not None:
            # After the name: state is index 0, so utime/stime (fields 14/15) are 11/12.
            total += int(fields[11]) + int(fields[12])
    return total / TICKS_PER_SECOND


def cpu_seconds_exact(pid: int) -> float:
    """CPU seconds of pid's live threads and descendants to the nanosecond (the
    scheduler's run time from /proc/<pid>/task/<tid>/schedstat): utime + stime come in
    clock ticks (10 ms), too coarse for µs per request over a few thousand requests."""
    total = 0
    for member in process_tree(pid):
        try:
            tasks = list((PROC / str(member) / "task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                total += int((task / "schedstat").read_text().split()[0])
            except (OSError, IndexError, ValueError):  # the thread ended meanwhile
                continue
    return total / 1e9
