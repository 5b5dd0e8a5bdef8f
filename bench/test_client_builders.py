"""Client-side cost of building one payment body per mode, in µs per payment.

Baseline measured in the same run: the unpruned PayTree body (full path), and
one Python hashlib SHA-256 of 64 bytes as an absolute yardstick.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import pytest

from nanomoni import wire
from nanomoni.client.wallet import Wallet
from nanomoni.protocol.model import Mode
from nanomoni.protocol.modes import RULES, Payer

PAYMENTS = 4096  # per round, sequential indices on a 2^16-leaf tree
MAX_INDEX = 2**16


def per_payment(benchmark: Any, run: Callable[[], None], count: int) -> None:
    benchmark.pedantic(run, rounds=5, iterations=1)
    benchmark.extra_info["us_per_payment"] = benchmark.stats.stats.min / count * 1e6


def build_sequence(payer: Payer, start: int) -> Callable[[], None]:
    """A closure building `PAYMENTS` consecutive bodies from a fresh start index."""
    state = {"next": start}

    def run() -> None:
        first = state["next"]
        for index in range(first, first + PAYMENTS):
            wire.encode_payment(payer.payment(index))
            payer.accepted(index)
        state["next"] = first + PAYMENTS

    return run


@pytest.mark.benchmark(group="client-builders")
def test_baseline_hashlib_sha256(benchmark: Any) -> None:
    block = bytes(64)

    def run() -> None:
        for _ in range(PAYMENTS):
            hashlib.sha256(block).digest()

    per_payment(benchmark, run, PAYMENTS)


@pytest.mark.benchmark(group="client-builders")
@pytest.mark.parametrize(
    "mode", [Mode.paytree, Mode.paytree_first_opt, Mode.paytree_second_opt, Mode.payword]
)
def test_build_payment(benchmark: Any, mode: Mode) -> None:
    # 5 rounds of PAYMENTS each must fit in the commitment.
    payer = RULES[mode].create_payer(Wallet.generate().key, max_index=MAX_INDEX, hash_alg="sha256")
    per_payment(benchmark, build_sequence(payer, 1), PAYMENTS)


@pytest.mark.benchmark(group="client-builders")
@pytest.mark.parametrize("batched", [False, True], ids=["one-by-one", "sign_many"])
def test_build_signature_payment(benchmark: Any, batched: bool) -> None:
    wallet = Wallet.generate("p256")
    payer = RULES[Mode.signature].create_payer(wallet.key, max_index=2**20, hash_alg="sha256")
    payer.channel_id = "c" * 43
    count = 256

    def run() -> None:
        if batched:
            payer.payments(range(1, count + 1))
        else:
            for index in range(1, count + 1):
                payer.payment(index)

    per_payment(benchmark, run, count)
