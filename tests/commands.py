"""Running the `nanomoni` command as a user would, in a test."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nanomoni

# The package under test (installed, or the source tree): the child imports the same copy.
PACKAGE_ROOT = str(Path(nanomoni.__file__).resolve().parent.parent)


def nanomoni_cli(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`python -m nanomoni ARGV` in `cwd`, with no NANOMONI_* settings from this process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NANOMONI_")}
    return subprocess.run(
        [sys.executable, "-P", "-m", "nanomoni", *argv],
        env={**env, "PYTHONPATH": PACKAGE_ROOT},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
