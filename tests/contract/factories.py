"""Small builders for store records used across the contract tests."""

from __future__ import annotations

import secrets

from nanomoni.protocol.model import ChannelTerms, Closure, Mode, PaymentState
from nanomoni.store.base import IssuerStore

HOUR_US = 3600 * 1_000_000


def new_key() -> str:
    """A stand-in account identity (the store treats keys as opaque text)."""
    return "MFkw" + secrets.token_urlsafe(60)


def new_channel_id() -> str:
    return secrets.token_urlsafe(32)[:43]


def terms(
    client: str,
    vendor: str,
    amount: int,
    *,
    root: bytes | None = None,
    mode: Mode = Mode.payword,
    channel_id: str | None = None,
    ttl_us: int | None = None,
) -> ChannelTerms:
    return ChannelTerms(
        id="6f1c2a3e-0000-4000-8000-000000000001",
        channel_id=channel_id or new_channel_id(),
        mode=mode,
        client_public_key_der_b64=client,
        vendor_public_key_der_b64=vendor,
        salt_b64="c2FsdA==",
        amount=amount,
        hash_alg="sha256",
        created_at="2026-11-30T00:00:00.000000+00:00",
        root=root if root is not None or mode is Mode.signature else secrets.token_bytes(32),
        unit_value=None if mode is Mode.signature else 1,
        max_index=None if mode is Mode.signature else amount,
        open_key=secrets.token_bytes(32),
        ttl_us=ttl_us,
    )


def closure(owed: int, digest: bytes = b"digest-1") -> Closure:
    return Closure(
        owed=owed,
        proof_digest=digest,
        client_balance=0,
        vendor_balance=0,
        closed_at="2026-11-30T01:00:00.000000+00:00",
    )


def state(index: int, owed: int | None = None, proof: bytes = b"proof") -> PaymentState:
    return PaymentState(
        index=index,
        owed=index if owed is None else owed,
        proof=proof + index.to_bytes(8, "big"),
        created_at="2026-11-30T00:30:00.000000+00:00",
    )


async def opened_channel(
    issuer: IssuerStore,
    amount: int,
    *,
    client_balance: int = 100,
    vendor_balance: int = 0,
    mode: Mode = Mode.payword,
    ttl_us: int | None = None,
    dispute_window_us: int = HOUR_US,
) -> tuple[str, str, ChannelTerms]:
    """A client and a vendor registered with these balances, and one open channel (its
    terms as the store opened them: expires_at filled in)."""
    client, vendor = new_key(), new_key()
    await issuer.register(client, client_balance)
    await issuer.register(vendor, vendor_balance)
    channel = terms(client, vendor, amount, mode=mode, ttl_us=ttl_us)
    opened = await issuer.open_channel(channel, dispute_window_us=dispute_window_us)
    return client, vendor, opened.terms
