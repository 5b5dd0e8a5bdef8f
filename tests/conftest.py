"""Shared fixtures. The suite runs against the installed package (see Makefile)."""

from __future__ import annotations

import os
from pathlib import Path

import nanomoni

REPO = Path(__file__).resolve().parent.parent


def pytest_sessionstart(session: object) -> None:
    if os.environ.get("NANOMONI_REQUIRE_INSTALLED") == "1":
        where = Path(nanomoni.__file__).resolve()
        if where.parent == REPO / "nanomoni":
            raise RuntimeError(f"nanomoni imported from the source tree ({where}), not the wheel")
