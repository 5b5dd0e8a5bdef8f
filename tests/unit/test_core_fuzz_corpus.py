"""Every fuzz target over its kept corpus (fuzz/corpus/<target>/), without the fuzzer.

The seeds, and any input a past fuzzing run found and that was added to the
corpus, stay regression tests of the normal suite (and of `make sanitize`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

import pytest

FUZZ = Path(__file__).resolve().parents[2] / "fuzz"
TARGETS = sorted(p.stem for p in (FUZZ / "targets").glob("*.py") if not p.stem.startswith("_"))


def load_target(name: str) -> Callable[[bytes], None]:
    module = importlib.import_module(f"targets.{name}")
    entry: Callable[[bytes], None] = module.test_one_input
    return entry


def test_every_target_has_seeds() -> None:
    assert len(TARGETS) >= 14
    for name in TARGETS:
        assert any((FUZZ / "corpus" / name).iterdir()), f"no seeds for {name}"


@pytest.mark.parametrize("name", TARGETS)
def test_fuzz_target_passes_its_corpus(name: str) -> None:
    test_one_input = load_target(name)
    inputs = sorted((FUZZ / "corpus" / name).iterdir())
    for path in inputs:
        test_one_input(path.read_bytes())
    # The empty input and a run of 0xff bytes take the extreme branch of every read.
    test_one_input(b"")
    test_one_input(b"\xff" * 64)
