"""`nanomoni demo` as a user runs it: a subprocess that starts and stops its own services."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from nanomoni import launch
from nanomoni.tools.demo import CHECKPOINT_LABEL, OFFLINE_LABEL, paywall_row, render, run_all
from nanomoni.tools.display import Display
from nanomoni.tools.local import cli_command
from nanomoni.tools.paywall_demo import cheapest_mode
from nanomoni.tools.runs import DEMO_RUNS, parse_runs


def test_demo_reconciles_every_mode(tmp_path: Path) -> None:
    argv, env = cli_command("demo", "--payments", "50")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [
        line for line in done.stdout.splitlines() if line.startswith("│") and "mode" not in line
    ]
    labels = [run.label for run in parse_runs(DEMO_RUNS)]
    labels.append(f"paywall ({cheapest_mode().value})")  # 50 requests bought through HTTP 402
    assert len(rows) == len(labels) + 2, done.stdout  # + the two protection rows
    for label, row in zip(labels, rows, strict=False):
        cells = [cell.strip() for cell in row.strip("│").split("│")]
        assert cells[0] == label
        assert cells[1] == "50"  # payments
        assert float(cells[2].replace(",", "")) > 0  # payments/s
        assert 0 < float(cells[3]) <= float(cells[4])  # p50 <= p99 latency
        if label.startswith("paywall"):  # 50 requests of 2, prepaid 4 at a time
            assert 100 <= int(cells[5]) <= 100 + 2 * 4
        else:
            assert cells[5] == "100"  # settled: 50 payments of 2
        assert cells[6] == "✓"
    # The client's protection: a checkpoint, and a close with the vendor offline.
    checkpoint, offline = ([c.strip() for c in row.strip("│").split("│")] for row in rows[-2:])
    assert checkpoint[0] == CHECKPOINT_LABEL and checkpoint[5:] == ["100", "✓"]
    assert offline[0] == OFFLINE_LABEL and offline[6] == "✓"
    assert 50 <= int(offline[5]) <= 100  # the vendor keeps what its checkpoints withdrew
    assert f"{CHECKPOINT_LABEL}: the vendor withdrew" in done.stdout
    assert f"{OFFLINE_LABEL}: refunded" in done.stdout
    assert "all balances reconcile ✓" in done.stdout
    assert "settled: what the issuer paid the vendor" in done.stdout
    assert list(tmp_path.iterdir()) == []  # its data lived in a temp dir, now removed


def test_demo_rejects_unknown_modes(tmp_path: Path) -> None:
    argv, env = cli_command("demo", "--modes", "paytree,cheque")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert done.returncode == 2
    assert "unknown mode 'cheque'" in done.stderr


async def test_demo_reports_what_does_not_reconcile(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # An issuer that grants almost nothing: every channel open is refused.
    with (
        launch.start_issuer(data_dir=tmp_path / "issuer", initial_balance=10) as issuer,
        launch.start_vendor(data_dir=tmp_path / "vendor", issuer_url=issuer.url) as vendor,
    ):
        outcomes = await run_all(
            issuer.url, vendor.url, parse_runs("payword,paytree:blake3"), 20, "p256", Display()
        )
    assert [outcome.reconciled for outcome in outcomes] == [False, False]
    for outcome in outcomes:
        assert any("insufficient_balance" in problem for problem in outcome.problems)
    rows = render(outcomes)
    assert [row[-1] for row in rows] == ["✗", "✗"]


async def test_the_paywall_row_reconciles_across_renewed_channels(tmp_path: Path) -> None:
    """More requests than one channel holds (256): the purse renews, and settles the
    channel it replaces in the background; what those consumed still counts."""
    with launch.start_issuer(data_dir=tmp_path / "issuer") as issuer:
        with Display().progress() as progress:
            outcome = await paywall_row(issuer.url, 300, progress)
    assert outcome.problems == [] and outcome.reconciled, outcome.problems
    assert outcome.payments == 300
    assert 600 <= outcome.settled <= 600 + 2 * 4  # 300 requests of 2, prepaid 4 at a time
