"""The same client for synchronous code: `SyncClient` runs each call to completion.

    python examples/pay_sync.py http://127.0.0.1:8001 http://127.0.0.1:8000
"""

from __future__ import annotations

import sys

from nanomoni.client import SyncClient, Wallet


def main(issuer_url: str, vendor_url: str) -> None:
    with SyncClient(issuer_url, vendor_url, Wallet.generate("secp256k1")) as client:
        before = client.register()
        channel = client.open_channel("payword", 1000, unit_value=10, max_index=100)
        for _ in range(25):
            channel.pay()
        channel.pay(5)  # five more units in one payment: k jumps from 25 to 30
        channel.close()
        settled = channel.refresh().balance
        print(f"paid {channel.owed}, settled {settled}, balance {before} -> {client.balance()}")
        assert settled == channel.owed == 300


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
