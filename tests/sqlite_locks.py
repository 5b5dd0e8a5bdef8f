"""Another process holding a SQLite file's write lock, the way a long migration or
a backup tool would: `with held_write_lock(path): ...`. Writers of that file wait
(busy_timeout) while it is held; readers in WAL mode go on."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.read()  # held until the test closes our stdin
conn.execute("ROLLBACK")
"""


@contextmanager
def held_write_lock(path: Path | str) -> Iterator[None]:
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdin is not None and holder.stdout is not None
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield
    finally:
        holder.stdin.close()
        if holder.wait(timeout=30) != 0:
            raise RuntimeError(f"the lock holder exited with {holder.returncode}")
