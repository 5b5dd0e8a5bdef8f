"""`nanomoni demo` as a user runs it: a subprocess that starts and stops its own services."""

from __future__ import annotations

import os
import subprocess
import sys

from nanomoni.client.demo import DEFAULT_RUNS, parse_runs

RUN_CLI = ["-m", "nanomoni"]


def test_demo_reconciles_every_mode() -> None:
    env = {**os.environ, "COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, *RUN_CLI, "demo", "--payments", "50"],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [
        line for line in done.stdout.splitlines() if line.startswith("│") and "mode" not in line
    ]
    labels = [run.label for run in parse_runs(",".join(DEFAULT_RUNS))]
    assert len(rows) == len(labels), done.stdout
    for label, row in zip(labels, rows, strict=True):
        cells = [cell.strip() for cell in row.strip("│").split("│")]
        assert cells[0] == label
        assert cells[1] == "50"  # payments
        assert float(cells[2].replace(",", "")) > 0  # payments/s
        assert cells[5] == "100"  # settled: 50 payments of 2
        assert cells[6] == "✓"
    assert "all balances reconcile ✓" in done.stdout


def test_demo_rejects_unknown_modes() -> None:
    done = subprocess.run(
        [sys.executable, *RUN_CLI, "demo", "--modes", "paytree,cheque"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "unknown mode 'cheque'" in done.stderr
