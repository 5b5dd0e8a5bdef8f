"""The NanoMoni wallet: keys, channel opening, payments in every mode, closing.

    wallet = Wallet.load_or_create(Path("client.pem"), kind="ed25519")
    async with Client("http://127.0.0.1:8001", "http://127.0.0.1:8000", wallet) as client:
        await client.register()
        channel = await client.open_channel("paytree_second_opt", 1000, unit_value=1,
                                            hash_alg="blake3")
        for _ in range(10):
            await channel.pay()          # retried on a lost response: a replay, never a 2nd charge
        await channel.close()            # the vendor settles at the issuer
        settled = (await channel.refresh()).balance   # the settled owed amount

Paying a 402 paywall (SPEC §11) without payment code: `PaymentAuth` (httpx, sync
and async) and `PaymentMiddleware` (aiohttp) in `nanomoni.client.auth`.

Refusals raise ApiError (a NanoMoniError) with the SPEC `code` and HTTP `status`.
`SyncClient` offers the same calls for synchronous code.
"""

from nanomoni.client.auth import PaymentAuth, PaymentMiddleware
from nanomoni.client.http import ApiError
from nanomoni.client.session import Channel, Client, PaymentResult, SyncChannel, SyncClient
from nanomoni.client.wallet import Wallet

__all__ = [
    "ApiError",
    "Channel",
    "Client",
    "PaymentAuth",
    "PaymentMiddleware",
    "PaymentResult",
    "SyncChannel",
    "SyncClient",
    "Wallet",
]
