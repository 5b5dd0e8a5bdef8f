"""_core.pyi matches the built extension: mypy's stubtest on the imported core.

stubtest compares every public name, signature, property and class of the
runtime module with the stub, so a function added to _core.pyx without its
stub (or a changed signature) fails here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from nanomoni import _core

CORE = Path(_core.__file__)  # the installed (or sanitized) build under test
STUB = CORE.parent / "_core.pyi"


def stubtest(tmp_path: Path, stub: str) -> subprocess.CompletedProcess[str]:
    """stubtest for this build of the core against `stub`, nothing else in sight.

    Both go into a package of their own: PYTHONPATH makes Python import it and
    MYPYPATH makes mypy read its stub; -P keeps the working directory off both.
    """
    package = tmp_path / "pkg" / "nanomoni"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    shutil.copy(CORE, package / CORE.name)
    # A wheel repaired by auditwheel finds its C libraries at $ORIGIN/../nanomoni.libs.
    libs = CORE.parent.parent / "nanomoni.libs"
    if libs.is_dir():
        (package.parent / libs.name).symlink_to(libs)
    (package / "_core.pyi").write_text(stub)
    root = str(package.parent)
    return subprocess.run(
        [sys.executable, "-P", "-m", "mypy.stubtest", "nanomoni._core"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": root, "MYPYPATH": root},
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_core_stub_matches_the_extension(tmp_path: Path) -> None:
    result = stubtest(tmp_path, STUB.read_text())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success" in result.stdout


def test_stubtest_catches_a_missing_stub(tmp_path: Path) -> None:
    """The same check with one function left out of the stub must fail."""
    line = "def verify_signature(key: bytes, message: bytes, signature: bytes) -> bool: ...\n"
    stub = STUB.read_text()
    assert line in stub
    result = stubtest(tmp_path, stub.replace(line, ""))
    assert result.returncode != 0
    assert "nanomoni._core.verify_signature is not present in stub" in result.stdout
