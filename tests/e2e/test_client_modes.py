"""The client library against a real issuer and vendor: every mode, both suites."""

from __future__ import annotations

import random
from collections.abc import Iterator

import msgspec
import pytest

from nanomoni import wire
from nanomoni.client import ApiError, Client, SyncClient, Wallet
from nanomoni.client.session import Transport
from nanomoni.errors import Code, NanoMoniError
from nanomoni.protocol.model import Mode
from nanomoni.tools.local import LocalServices, local_services

SUITES = ("sha256", "blake3")
UNIT = 3


@pytest.fixture(scope="module")
def services() -> Iterator[LocalServices]:
    with local_services("embedded") as started:
        yield started


async def ready_client(services: LocalServices, kind: str = "p256") -> Client:
    from nanomoni.tools.demo import wait_for_account

    client = Client(services.issuer_url, services.vendor_url, Wallet.generate(kind))
    await client.register()
    await wait_for_account(client, await client.vendor_public_key())
    return client


def sibling_count(body: bytes) -> int:
    return len(msgspec.json.decode(body, type=wire.TreePaymentBody).siblings_b64)


@pytest.mark.parametrize("alg", SUITES)
@pytest.mark.parametrize("mode", list(Mode))
async def test_every_mode_pays_and_settles_exactly(
    services: LocalServices, mode: Mode, alg: str
) -> None:
    client = await ready_client(services, "ed25519" if mode is Mode.signature else "p256")
    try:
        vendor_key = await client.vendor_public_key()
        before, vendor_before = await client.balance(), await client.balance(vendor_key)
        amount = 127 * UNIT + 50
        if mode is Mode.signature:
            channel = await client.open_channel(mode, amount, hash_alg=alg)
            indices = [10 * UNIT, 25 * UNIT, 70 * UNIT]
        else:
            channel = await client.open_channel(
                mode, amount, unit_value=UNIT, max_index=127, hash_alg=alg
            )
            indices = [10, 25, 70]
        assert channel.info.terms.hash_alg == alg
        assert await client.balance() == before - amount
        counts = []
        for index in indices:
            if mode in (Mode.paytree, Mode.paytree_first_opt, Mode.paytree_second_opt):
                counts.append(sibling_count(channel.encode_payment(index)))
            result = await channel.pay_to(index)
            assert not result.replay and result.attempts == 1
            assert result.owed == 70 * UNIT * index // indices[-1]
        expected_counts = {
            Mode.paytree: [7, 7, 7],
            Mode.paytree_first_opt: [7, 5, 7],  # SPEC §5.4: depth, then bit_length(i ^ last)
            Mode.paytree_second_opt: [7, 4, 6],  # SPEC §5.5: only unknown siblings
        }
        assert counts == expected_counts.get(mode, [])
        await channel.close()
        await channel.close()  # idempotent: no second settlement
        info = await channel.refresh()
        assert info.is_closed and info.balance == 70 * UNIT
        assert await client.balance() == before - 70 * UNIT
        assert await client.balance(vendor_key) == vendor_before + 70 * UNIT
        with pytest.raises(ApiError) as refused:
            await channel.pay_to(indices[-1] + 1)
        assert refused.value.code is Code.channel_closed
    finally:
        await client.close()


async def test_refusals_surface_their_spec_code(services: LocalServices) -> None:
    client = await ready_client(services)
    try:
        channel = await client.open_channel(Mode.payword, 100, unit_value=1, max_index=100)
        await channel.pay_to(5)
        with pytest.raises(ApiError) as stale:
            await channel.pay_to(4)
        assert stale.value.code is Code.non_monotonic and stale.value.status == 400
        with pytest.raises(NanoMoniError) as too_far:  # refused before sending: no proof exists
            await channel.pay_to(101)
        assert too_far.value.code is Code.exceeds_max
        with pytest.raises(ApiError) as missing:
            await client.get_channel(Mode.payword, "A" * 43)
        assert missing.value.code is Code.channel_not_found and missing.value.status == 404
        with pytest.raises(ApiError) as broke:
            await client.open_channel(Mode.signature, 10**15)
        assert broke.value.code is Code.insufficient_balance
        assert (await channel.pay_to(6)).owed == 6  # refusals left the channel usable
    finally:
        await client.close()


def test_sync_client_runs_the_lifecycle(services: LocalServices) -> None:
    wallet = Wallet.generate("secp256k1")
    with SyncClient(services.issuer_url, services.vendor_url, wallet) as client:
        start = client.register()
        channel = client.open_channel("paytree_second_opt", 40, unit_value=2, max_index=20)
        for _ in range(20):
            channel.pay()
        assert channel.owed == 40
        channel.close()
        assert channel.refresh().balance == 40
        assert client.balance() == start - 40


@pytest.mark.parametrize("mode", [Mode.paytree_first_opt, Mode.paytree_second_opt])
async def test_pruned_proofs_follow_the_vendor_over_random_gaps(
    services: LocalServices, mode: Mode
) -> None:
    rng = random.Random(f"gaps-{mode.value}")
    client = await ready_client(services)
    try:
        channel = await client.open_channel(mode, 1000, unit_value=1, max_index=1000)
        index = sent = payments = 0
        while index + 100 <= 1000:
            index += rng.choice([1, 1, 2, 3, 7, 16, 33, 100])
            sent += sibling_count(channel.encode_payment(index))
            result = await channel.pay_to(index)
            assert not result.replay and result.owed == index
            payments += 1
        await channel.close()
        assert (await channel.refresh()).balance == index
        # Pruning pays off: fewer siblings than full depth-10 paths would carry.
        assert sent < 10 * payments
    finally:
        await client.close()


@pytest.mark.parametrize("transport", ["batch", "websocket"])
async def test_pay_many_groups_payments_of_every_mode(
    services: LocalServices, transport: Transport
) -> None:
    client = await ready_client(services, "ed25519")
    try:
        vendor_key = await client.vendor_public_key()
        vendor_before = await client.balance(vendor_key)
        channels = [
            await client.open_channel(mode, 200, unit_value=2, max_index=100)
            for mode in Mode
            for _ in range(2)
        ]
        rng = random.Random(transport)
        plan = [(channel, rng.choice([1, 1, 2, 5])) for channel in channels for _ in range(9)]
        rng.shuffle(plan)
        results = await client.pay_many(plan, batch_size=16, transport=transport)
        assert all(not isinstance(result, ApiError) for result in results), results
        owed = dict.fromkeys(channels, 0)
        for (channel, units), result in zip(plan, results, strict=True):
            assert not isinstance(result, ApiError)
            owed[channel] += units * channel.unit_value  # signature: unit 1, index = amount
            assert result.owed == owed[channel] and not result.replay
        # The payers stand where the vendor does: a single payment follows on.
        for channel in channels:
            assert (await channel.pay()).owed == owed[channel] + channel.unit_value
        # A refusal is that item's result; the others still go through.
        closed, open_ = channels[0], channels[1]
        await closed.close()
        mixed = await client.pay_many([(closed, 1), (open_, 1)], transport=transport)
        assert isinstance(mixed[0], ApiError) and mixed[0].code is Code.channel_closed
        assert not isinstance(mixed[1], ApiError) and mixed[1].owed == open_.owed
        settled = 0
        for channel in channels:
            await channel.close()
            settled += (await channel.refresh()).balance
        assert settled == sum(channel.owed for channel in channels)
        assert await client.balance(vendor_key) == vendor_before + settled
    finally:
        await client.close()
