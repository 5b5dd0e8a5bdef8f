"""Every script in examples/ runs as a user would run it, against real services; the
README's Python snippet is one of them, word for word."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import nanomoni
from nanomoni.launch import ServiceProcess, start_issuer, start_vendor

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
PACKAGE_ROOT = str(Path(nanomoni.__file__).resolve().parent.parent)


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    root = tmp_path_factory.mktemp("examples")
    issuer: ServiceProcess
    with start_issuer(data_dir=root / "issuer") as issuer:
        with start_vendor(data_dir=root / "vendor", issuer_url=issuer.url) as vendor:
            yield issuer.url, vendor.url
            assert vendor.stop() == 0
        assert issuer.stop() == 0


def run_example(name: str, *argv: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NANOMONI_")}
    done = subprocess.run(
        [sys.executable, "-P", str(EXAMPLES / name), *argv],
        env={**env, "PYTHONPATH": PACKAGE_ROOT},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_pay_each_mode(services: tuple[str, str]) -> None:
    output = run_example("pay_each_mode.py", *services)
    settled = re.findall(r"^(\w+)\s+paid\s+(\d+)\s+settled\s+(\d+)$", output, re.MULTILINE)
    assert [mode for mode, _, _ in settled] == [
        "signature", "payword", "paytree", "paytree_first_opt", "paytree_second_opt",
    ]  # fmt: skip
    for _, paid, got in settled:
        assert paid == got != "0"


def test_pay_sync(services: tuple[str, str]) -> None:
    assert "paid 300, settled 300" in run_example("pay_sync.py", *services)


def test_verify_offline() -> None:
    output = run_example("verify_offline.py")
    assert "signatures: [True, True, True, False]" in output


def test_the_readme_snippet_is_an_example_word_for_word() -> None:
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.DOTALL)
    example = (EXAMPLES / "pay_each_mode.py").read_text()
    code = example[example.index("from __future__") :]
    assert code in blocks
