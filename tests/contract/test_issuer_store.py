"""IssuerStore contract: every operation's happy path and each refusal, on every backend."""

from __future__ import annotations

import asyncio

import msgspec
import pytest
from contract.factories import closure, new_channel_id, new_key, opened_channel, terms

from nanomoni.errors import Code, NanoMoniError
from nanomoni.protocol.model import Account, Mode
from nanomoni.store import IssuerStore


async def test_register_creates_then_is_idempotent(issuer: IssuerStore) -> None:
    key = new_key()
    assert await issuer.get_account(key) is None
    assert await issuer.register(key, 500) == Account(public_key_der_b64=key, balance=500)
    # A second registration (even with another initial balance) never grants again.
    assert await issuer.register(key, 700) == Account(public_key_der_b64=key, balance=500)
    assert await issuer.get_account(key) == Account(public_key_der_b64=key, balance=500)


async def test_concurrent_registrations_grant_once(issuer: IssuerStore) -> None:
    key = new_key()
    results = await asyncio.gather(*(issuer.register(key, 1000) for _ in range(25)))
    assert {account.balance for account in results} == {1000}
    account = await issuer.get_account(key)
    assert account is not None and account.balance == 1000


async def test_register_with_zero_balance(issuer: IssuerStore) -> None:
    key = new_key()
    assert (await issuer.register(key, 0)).balance == 0


async def test_deposit_adds_and_unknown_account_is_none(issuer: IssuerStore) -> None:
    key = new_key()
    await issuer.register(key, 10)
    assert await issuer.deposit(key, 32) == Account(public_key_der_b64=key, balance=42)
    assert await issuer.deposit(key, 0) == Account(public_key_der_b64=key, balance=42)
    assert await issuer.deposit(new_key(), 5) is None


async def test_amounts_stay_exact_beyond_double_precision(issuer: IssuerStore) -> None:
    client, vendor = new_key(), new_key()
    big = 2**62 + 12345  # not representable as a double
    await issuer.register(client, big)
    await issuer.register(vendor, 0)
    channel = terms(client, vendor, 2**53 + 3)
    after_open = (await issuer.open_channel(channel)).account
    assert after_open.balance == big - (2**53 + 3)
    settled = await issuer.settle(channel.channel_id, closure(2**53 + 1))
    assert settled.vendor_balance == 2**53 + 1
    assert settled.client_balance == big - (2**53 + 1)
    assert settled.receipt.client_refund == 2
    assert settled.receipt.amount == 2**53 + 3 and settled.receipt.owed == 2**53 + 1


async def test_supply_above_int64_is_refused_without_change(issuer: IssuerStore) -> None:
    key = new_key()
    await issuer.register(key, 2**63 - 10)
    with pytest.raises(NanoMoniError) as refused:
        await issuer.deposit(key, 11)
    assert refused.value.code is Code.invalid_amount
    with pytest.raises(NanoMoniError):
        await issuer.register(new_key(), 100)
    account = await issuer.get_account(key)
    assert account is not None and account.balance == 2**63 - 10
    assert (await issuer.deposit(key, 9)) == Account(public_key_der_b64=key, balance=2**63 - 1)


async def test_open_debits_client_and_stores_terms(issuer: IssuerStore) -> None:
    client, vendor = new_key(), new_key()
    await issuer.register(client, 100)
    await issuer.register(vendor, 0)
    channel = terms(client, vendor, 60)
    opened = await issuer.open_channel(channel)
    assert opened.account == Account(public_key_der_b64=client, balance=40)
    assert opened.terms == channel and not opened.replayed  # no ttl: never expires
    assert (opened.receipt.kind, opened.receipt.seq, opened.receipt.amount) == ("open", 1, 60)
    stored = await issuer.get_channel(channel.channel_id)
    assert stored is not None
    assert stored.terms == channel
    assert stored.closure is None and not stored.is_closed
    assert stored.state == "open" and stored.receipts == (opened.receipt,)
    assert await issuer.get_channel(new_channel_id()) is None


async def test_open_signature_mode_without_root(issuer: IssuerStore) -> None:
    client, vendor = new_key(), new_key()
    await issuer.register(client, 100)
    await issuer.register(vendor, 0)
    for _ in range(2):
        await issuer.open_channel(terms(client, vendor, 10, mode=Mode.signature))
    account = await issuer.get_account(client)
    assert account is not None and account.balance == 80


@pytest.mark.parametrize("missing", ["client", "vendor"])
async def test_open_refuses_unregistered_party(issuer: IssuerStore, missing: str) -> None:
    client, vendor = new_key(), new_key()
    await issuer.register(client if missing == "vendor" else vendor, 100)
    channel = terms(client, vendor, 10)
    with pytest.raises(NanoMoniError) as refused:
        await issuer.open_channel(channel)
    assert refused.value.code is Code.not_registered
    assert missing in refused.value.detail
    assert await issuer.get_channel(channel.channel_id) is None


async def test_open_refuses_insufficient_balance_and_changes_nothing(issuer: IssuerStore) -> None:
    client, vendor = new_key(), new_key()
    await issuer.register(client, 9)
    await issuer.register(vendor, 0)
    root = b"\x01" * 32
    channel = terms(client, vendor, 10, root=root)
    with pytest.raises(NanoMoniError) as refused:
        await issuer.open_channel(channel)
    assert refused.value.code is Code.insufficient_balance
    assert await issuer.get_channel(channel.channel_id) is None
    # The refused open neither debited nor used up the root.
    await issuer.deposit(client, 1)
    assert (await issuer.open_channel(channel)).account.balance == 0


async def test_open_refuses_reused_commitment(issuer: IssuerStore) -> None:
    client, vendor = new_key(), new_key()
    await issuer.register(client, 100)
    await issuer.register(vendor, 0)
    root = b"\x07" * 32
    await issuer.open_channel(terms(client, vendor, 10, root=root))
    second = terms(client, vendor, 10, root=root)
    with pytest.raises(NanoMoniError) as refused:
        await issuer.open_channel(second)
    assert refused.value.code is Code.commitment_reused
    assert await issuer.get_channel(second.channel_id) is None
    account = await issuer.get_account(client)
    assert account is not None and account.balance == 90


async def test_open_refuses_amount_below_one(issuer: IssuerStore) -> None:
    client, vendor = new_key(), new_key()
    await issuer.register(client, 100)
    await issuer.register(vendor, 0)
    with pytest.raises(NanoMoniError) as refused:
        await issuer.open_channel(terms(client, vendor, 0))
    assert refused.value.code is Code.invalid_amount


async def test_settle_moves_money_once_and_retry_returns_same(issuer: IssuerStore) -> None:
    client, vendor, channel = await opened_channel(issuer, 60, vendor_balance=5)
    first = await issuer.settle(channel.channel_id, closure(25))
    assert first.closure is not None and not first.replayed
    assert (first.client_balance, first.vendor_balance, first.closure.owed) == (75, 30, 25)
    receipt = first.receipt
    assert (receipt.kind, receipt.seq, receipt.owed, receipt.vendor_credited) == (
        "settlement", 2, 25, 25)
    assert receipt.client_refund == 35
    again = await issuer.settle(channel.channel_id, closure(25))
    assert again == msgspec.structs.replace(first, replayed=True)
    stored = await issuer.get_channel(channel.channel_id)
    assert stored is not None and stored.closure == first.closure
    assert stored.is_closed and stored.receipts[-1] == receipt and stored.locked == 0
    # Later account activity does not change what a retry answers.
    await issuer.deposit(client, 1000)
    assert await issuer.settle(channel.channel_id, closure(25)) == again
    vendor_account = await issuer.get_account(vendor)
    assert vendor_account is not None and vendor_account.balance == 30


async def test_settle_with_another_proof_is_already_closed(issuer: IssuerStore) -> None:
    _client, vendor, channel = await opened_channel(issuer, 60)
    await issuer.settle(channel.channel_id, closure(25, b"proof-a"))
    with pytest.raises(NanoMoniError) as refused:
        await issuer.settle(channel.channel_id, closure(30, b"proof-b"))
    assert refused.value.code is Code.already_closed
    account = await issuer.get_account(vendor)
    assert account is not None and account.balance == 25


async def test_settle_unknown_channel(issuer: IssuerStore) -> None:
    with pytest.raises(NanoMoniError) as refused:
        await issuer.settle(new_channel_id(), closure(1))
    assert refused.value.code is Code.channel_not_found


async def test_settle_owed_above_amount_is_refused(issuer: IssuerStore) -> None:
    _client, _vendor, channel = await opened_channel(issuer, 60)
    with pytest.raises(NanoMoniError) as refused:
        await issuer.settle(channel.channel_id, closure(61))
    assert refused.value.code is Code.exceeds_amount
    stored = await issuer.get_channel(channel.channel_id)
    assert stored is not None and stored.closure is None and len(stored.receipts) == 1
    full = await issuer.settle(channel.channel_id, closure(60))
    assert (full.client_balance, full.vendor_balance) == (40, 60)


async def test_settle_signature_mode_keeps_close_signatures(issuer: IssuerStore) -> None:
    _client, _vendor, channel = await opened_channel(issuer, 50, mode=Mode.signature)
    signed = msgspec.structs.replace(
        closure(20),
        close_payload_b64="eyJjaGFubmVsX2lkIjoiYyJ9",
        client_close_signature_b64="Y2xpZW50",
        vendor_close_signature_b64="dmVuZG9y",
    )
    settled = (await issuer.settle(channel.channel_id, signed)).closure
    assert settled is not None
    assert settled == msgspec.structs.replace(
        signed, client_balance=80, vendor_balance=20, closed_at=settled.closed_at
    )
    stored = await issuer.get_channel(channel.channel_id)
    assert stored is not None and stored.closure == settled


async def test_client_paying_itself_conserves_money(issuer: IssuerStore) -> None:
    same = new_key()
    await issuer.register(same, 100)
    channel = terms(same, same, 40)
    assert (await issuer.open_channel(channel)).account.balance == 60
    settled = await issuer.settle(channel.channel_id, closure(15))
    assert settled.client_balance == settled.vendor_balance == 100
