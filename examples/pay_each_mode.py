"""Pay a vendor in every mode with the async client, then settle and check the books.

    nanomoni issuer --port 8001 &
    nanomoni vendor --port 8000 --issuer-url http://127.0.0.1:8001 &
    python examples/pay_each_mode.py http://127.0.0.1:8001 http://127.0.0.1:8000
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from tempfile import TemporaryDirectory

from nanomoni.client import Client, Wallet

MODES = ["signature", "payword", "paytree", "paytree_first_opt", "paytree_second_opt"]


async def main(issuer_url: str, vendor_url: str) -> None:
    with TemporaryDirectory() as keys:
        wallet = Wallet.load_or_create(Path(keys) / "client.pem", kind="ed25519")
        async with Client(issuer_url, vendor_url, wallet) as client:
            print("balance", await client.register())
            for mode in MODES:
                # 100 units locked; PayWord/PayTree commit to 50 payments of 2 units each.
                channel = await client.open_channel(mode, 100, unit_value=2, max_index=50)
                for _ in range(10):
                    await channel.pay()  # a retried payment is a replay, never a second charge
                await channel.close()  # the vendor settles at the issuer
                settled = (await channel.refresh()).balance
                print(f"{mode:20} paid {channel.owed:3}  settled {settled:3}")
                assert settled == channel.owed
            print("balance", await client.balance())


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
