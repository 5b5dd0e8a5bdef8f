"""Writes each target's seeds() into fuzz/corpus/<target>/ (run after changing a
target's input layout; the corpus is kept in the repository)."""

from __future__ import annotations

import importlib
import sys

from run import CORPUS, target_names


def main() -> None:
    for name in sys.argv[1:] or target_names():
        module = importlib.import_module(f"targets.{name}")
        seeds: dict[str, bytes] = module.seeds() if hasattr(module, "seeds") else {}
        folder = CORPUS / name
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("seed-*"):
            old.unlink()
        for label, data in seeds.items():
            (folder / f"seed-{label}").write_bytes(data)
        print(f"{name}: {len(seeds)} seeds")


if __name__ == "__main__":
    main()
