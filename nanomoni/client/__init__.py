"""The NanoMoni wallet: keys, channel opening, payments in every mode, closing."""

from nanomoni.client.http import ApiError
from nanomoni.client.proofs import (
    FirstOptPayer,
    PaytreePayer,
    PaywordPayer,
    SecondOptPayer,
    SignaturePayer,
)
from nanomoni.client.session import Channel, Client, PaymentResult, SyncChannel, SyncClient
from nanomoni.client.wallet import Wallet

__all__ = [
    "ApiError",
    "Channel",
    "Client",
    "FirstOptPayer",
    "PaymentResult",
    "PaytreePayer",
    "PaywordPayer",
    "SecondOptPayer",
    "SignaturePayer",
    "SyncChannel",
    "SyncClient",
    "Wallet",
]
