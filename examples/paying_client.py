"""Buys from examples/paid_api.py without any payment code: `PaymentAuth` answers
the 402s, prepays a few requests at a time and pays the stream as it flows.

    python examples/paying_client.py [API_URL] [ISSUER_URL]
"""

from __future__ import annotations

import sys

import httpx

from nanomoni.client import PaymentAuth


def main(api: str, issuer: str) -> None:
    with PaymentAuth(issuer, budget=1_000, prepay=4) as auth:
        with httpx.Client(base_url=api, auth=auth, timeout=30) as http:
            for symbol in ("ACME", "INIT", "NANO"):
                print(http.get(f"/quotes/{symbol}").json())
            with http.stream("GET", "/completions", params={"prompt": "micropayments"}) as reply:
                words = [line[6:] for line in reply.iter_lines() if line.startswith("data: ")]
            print(" ".join(words))
        # Leaving the block settles every channel: unspent prepaid credit stays paid,
        # the rest of each channel goes back to this wallet.
    for channel in auth.purse.closed:
        print(f"settled {channel.mode.value} channel {channel.channel_id}: {channel.owed}")


if __name__ == "__main__":
    main(
        sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080",
        sys.argv[2] if len(sys.argv) > 2 else "http://127.0.0.1:8001",
    )
