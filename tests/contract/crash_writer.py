"""Writer process for the crash test: writes as fast as it can and prints one
line per acknowledged write, until it is killed.

    python crash_writer.py STORE_URL
Lines: `ready`, then `cas <channel> <index>` and `deposit` (one per unit deposited).
"""

from __future__ import annotations

import asyncio
import sys

from nanomoni.protocol.model import CasOutcome, PaymentState
from nanomoni.store import open_issuer_store, open_vendor_store

ACCOUNT = "crash-account"
CHANNELS = 4


def acknowledge(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def main(url: str) -> None:
    vendor = await open_vendor_store(url)
    issuer = await open_issuer_store(url)
    await issuer.register(ACCOUNT, 0)
    acknowledge("ready")

    async def pay(channel: int) -> None:
        index = 0
        while True:
            index += 1
            new = PaymentState(index=index, owed=index, proof=b"p", created_at="t")
            result = await vendor.compare_and_set(f"crash-{channel}", new, {index: bytes(32)})
            if result.outcome is not CasOutcome.stored:
                raise SystemExit(f"unexpected {result}")
            acknowledge(f"cas {channel} {index}")

    async def deposit() -> None:
        while True:
            await issuer.deposit(ACCOUNT, 1)
            acknowledge("deposit")

    await asyncio.gather(*(pay(n) for n in range(CHANNELS)), deposit(), deposit())


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
