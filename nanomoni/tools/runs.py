"""What the demo and the load generator run: a mode on a hash suite (`--modes`)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from nanomoni import config
from nanomoni.crypto import HASH_ALGS
from nanomoni.protocol.model import Mode
from nanomoni.protocol.modes import ALL


@dataclass(frozen=True)
class Run:
    mode: Mode
    hash_alg: str

    @property
    def label(self) -> str:
        if self.hash_alg == "sha256":
            return self.mode.value
        return f"{self.mode.value} ({self.hash_alg})"


def parse_runs(text: str) -> list[Run]:
    """ "mode" or "mode:hash_alg", comma separated."""
    runs = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        mode_text, _, alg = item.partition(":")
        try:
            mode = Mode(mode_text)
        except ValueError:
            known = ", ".join(rules.mode.value for rules in ALL)
            raise argparse.ArgumentTypeError(
                f"unknown mode {mode_text!r}; expected one of {known}"
            ) from None
        alg = alg or "sha256"
        if alg not in HASH_ALGS:
            raise argparse.ArgumentTypeError(f"unknown hash suite {alg!r}; expected {HASH_ALGS}")
        runs.append(Run(mode, alg))
    if not runs:
        raise argparse.ArgumentTypeError("no modes given")
    return runs


EVERY_MODE = ",".join(rules.mode.value for rules in ALL)
DEMO_RUNS = ",".join([EVERY_MODE, *config.DEMO_EXTRA_RUNS])
