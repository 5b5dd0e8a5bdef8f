"""One parser for every command, defaults from `nanomoni.config` shown in `--help`,
and a plain install (no `tools` extra) that still runs everything but the bench."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import nanomoni
from nanomoni import config
from nanomoni.cli import build_parser

PACKAGE_ROOT = str(Path(nanomoni.__file__).resolve().parent.parent)
# Run as on a plain install: rich and matplotlib cannot be imported.
WITHOUT_TOOLS = "import sys; sys.modules['rich'] = sys.modules['matplotlib'] = None; "


def nanomoni_cli(
    *argv: str, prelude: str = "", timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    code = f"{prelude}import sys; from nanomoni.cli import main; sys.exit(main(sys.argv[1:]))"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NANOMONI_")}
    return subprocess.run(
        [sys.executable, "-P", "-c", code, *argv],
        env={**env, "PYTHONPATH": PACKAGE_ROOT},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    ("command", "shown"),
    [
        ("issuer", [f"(default: {config.INITIAL_BALANCE})", f"(default: {config.MAX_INDEX})",
                    f"(default: {config.DISPUTE_WINDOW})", f"(default: {config.MAX_CHANNEL_TTL})",
                    f"(default: {config.MIN_CHANNEL_TTL})"]),
        ("vendor", [f"(default: {config.MAX_HASHES})", f"(default: {config.TERMS_CACHE})",
                    f"(default: {config.WATCH_INTERVAL})",
                    f"(default: {config.CHECKPOINT_INTERVAL})"]),
        ("demo", [f"(default: {config.DEMO_PAYMENTS})", "payword:blake3"]),
        ("bench", [f"(default: {config.BENCH_PAYMENTS})", f"(default: {config.BENCH_CHANNELS})"]),
    ],
)
def test_every_help_shows_the_defaults(command: str, shown: list[str]) -> None:
    done = nanomoni_cli(command, "--help")
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())  # argparse wraps long help lines
    for default in shown:
        assert default in text, (default, done.stdout)


def test_version() -> None:
    done = nanomoni_cli("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"nanomoni {nanomoni.__version__}"


def test_demo_and_bench_are_subcommands_of_the_one_parser() -> None:
    parser = build_parser()
    demo = parser.parse_args(["demo", "--payments", "7", "--modes", "payword"])
    assert demo.payments == 7 and [run.label for run in demo.modes] == ["payword"]
    bench = parser.parse_args(["bench", "--channels", "3"])
    assert bench.channels == 3 and bench.payments == config.BENCH_PAYMENTS
    with pytest.raises(SystemExit):
        parser.parse_args(["bench", "--payments", str(config.BENCH_MAX_PAYMENTS + 1)])


def test_the_protection_flags_take_durations() -> None:
    parser = build_parser()
    issuer = parser.parse_args(["issuer", "--dispute-window", "2.5", "--max-channel-ttl", "90"])
    assert (issuer.dispute_window, issuer.max_channel_ttl) == (2.5, 90.0)
    vendor = parser.parse_args(
        ["vendor", "--issuer-url", "http://127.0.0.1:1", "--checkpoint-interval", "0"]
    )
    assert vendor.checkpoint_interval == 0 and vendor.watch_interval == config.WATCH_INTERVAL
    for wrong in (["issuer", "--dispute-window", "0"], ["issuer", "--max-channel-ttl", "1e10"],
                  ["vendor", "--issuer-url", "x", "--watch-interval", "0"]):
        with pytest.raises(SystemExit):
            parser.parse_args(wrong)


def test_a_subcommands_mistake_prints_that_subcommands_usage() -> None:
    done = nanomoni_cli("demo", "--payments", "0")
    assert done.returncode == 2
    assert done.stderr.startswith("usage: nanomoni demo")
    assert "must be at least 1" in done.stderr


def test_bench_without_the_tools_extra_says_what_to_install(tmp_path: Path) -> None:
    done = nanomoni_cli("bench", "--out", str(tmp_path / "out"), prelude=WITHOUT_TOOLS)
    assert done.returncode != 0
    assert (
        done.stderr.strip().splitlines()
        == ["nanomoni bench: rich is not installed: pip install 'nanomoni[tools]'"]
        or "pip install 'nanomoni[tools]'" in done.stderr.strip().splitlines()[-1]
    )
    assert "Traceback" not in done.stderr


def test_demo_runs_on_a_plain_install() -> None:
    done = nanomoni_cli(
        "demo", "--payments", "5", "--modes", "payword,signature", prelude=WITHOUT_TOOLS,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "all balances reconcile ✓" in done.stdout
    rows = [
        line.split()
        for line in done.stdout.splitlines()
        if line.startswith(("payword", "signature"))
    ]
    # Every mode asked for, then the client's protection: a checkpoint, a client close.
    assert [" ".join(row[:-6]) for row in rows if row[-1] == "✓"] == [
        "payword", "signature", "signature · checkpoint", "payword · client close, vendor offline"
    ]


def test_the_plain_install_pulls_no_plotting_or_terminal_ui() -> None:
    from importlib.metadata import requires

    required = requires("nanomoni") or []
    plain = {
        r.split(">")[0].split("=")[0].split(";")[0].strip() for r in required if "extra ==" not in r
    }
    assert plain and not plain & {"rich", "matplotlib"}, plain
    tools = [r for r in required if 'extra == "tools"' in r]
    assert {r.split(">")[0] for r in tools} == {"rich", "matplotlib"}
