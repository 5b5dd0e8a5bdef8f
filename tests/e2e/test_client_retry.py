"""A payment whose response is lost is retried with the identical body: the vendor
answers it as a replay and nothing is charged twice."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit

import aiohttp
import pytest

from nanomoni.client import Client, Wallet
from nanomoni.protocol.model import Mode
from nanomoni.tools.demo import wait_for_account
from nanomoni.tools.local import LocalServices, local_services


class DroppingProxy:
    """A TCP relay to the vendor that, when armed, lets the next payment reach
    the vendor but cuts the connection instead of relaying its response."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.armed = False
        self.dropped = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        dropping = asyncio.Event()

        async def requests() -> None:
            while data := await reader.read(65536):
                if self.armed and b"/payments" in data:
                    self.armed = False
                    dropping.set()
                up_writer.write(data)
                await up_writer.drain()

        async def responses() -> None:
            while data := await up_reader.read(65536):
                if dropping.is_set():
                    self.dropped += 1  # the vendor has answered: it did accept
                    writer.transport.abort()
                    return
                writer.write(data)
                await writer.drain()

        try:
            await asyncio.wait(
                [asyncio.create_task(requests()), asyncio.create_task(responses())],
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            writer.transport.abort()
            up_writer.transport.abort()


@pytest.fixture(scope="module")
def services() -> Iterator[LocalServices]:
    with local_services("embedded") as started:
        yield started


@pytest.fixture
async def proxy(services: LocalServices) -> AsyncIterator[tuple[DroppingProxy, str]]:
    relay = DroppingProxy(urlsplit(services.vendor_url).port or 80)
    url = await relay.start()
    yield relay, url
    await relay.stop()


@pytest.mark.parametrize("mode", list(Mode))
async def test_retry_after_lost_response_is_a_replay(
    services: LocalServices, proxy: tuple[DroppingProxy, str], mode: Mode
) -> None:
    relay, vendor_url = proxy
    async with Client(
        services.issuer_url, vendor_url, Wallet.generate(), retry_delay=0.01
    ) as client:
        before = await client.register()
        await wait_for_account(client, await client.vendor_public_key())
        channel = await client.open_channel(mode, 100, unit_value=1, max_index=100)
        await channel.pay(3)
        relay.armed = True
        retried = await channel.pay(4)
        assert relay.dropped == 1
        assert retried.replay and retried.attempts == 2 and retried.index == 7
        final = await channel.pay(1)
        assert not final.replay and final.owed == 8
        await channel.close()
        assert (await channel.refresh()).balance == 8
        assert await client.balance() == before - 8


async def test_unresolved_payment_is_resent_before_the_next(
    services: LocalServices, proxy: tuple[DroppingProxy, str]
) -> None:
    relay, vendor_url = proxy
    wallet = Wallet.generate()
    async with Client(services.issuer_url, vendor_url, wallet, retries=0) as client:
        before = await client.register()
        await wait_for_account(client, await client.vendor_public_key())
        channel = await client.open_channel(Mode.paytree_second_opt, 64, max_index=64)
        await channel.pay_to(5)
        relay.armed = True
        with pytest.raises(aiohttp.ClientConnectionError):
            await channel.pay_to(9)
        assert relay.dropped == 1
        # The client cannot know whether 9 was accepted, so it resends 9's exact
        # body (a replay) before building 12 against the vendor's real state.
        result = await channel.pay_to(12)
        assert not result.replay and result.owed == 12
        await channel.close()
        assert (await channel.refresh()).balance == 12
        assert await client.balance() == before - 12


async def test_a_batch_whose_answer_was_lost_is_resent_and_counted_once(
    services: LocalServices, proxy: tuple[DroppingProxy, str]
) -> None:
    relay, vendor_url = proxy
    async with Client(
        services.issuer_url, vendor_url, Wallet.generate(), retry_delay=0.01
    ) as client:
        before = await client.register()
        await wait_for_account(client, await client.vendor_public_key())
        first = await client.open_channel(Mode.payword, 100, unit_value=1, max_index=100)
        second = await client.open_channel(Mode.paytree_first_opt, 100, max_index=100)
        relay.armed = True
        plan = [(first, 2), (second, 1), (first, 3), (second, 4)]
        results = await client.pay_many(plan)
        assert relay.dropped == 1
        # Re-sent whole: each channel's last item is a replay, the earlier ones are
        # covered by it (the vendor answers them non_monotonic): all paid, once.
        assert [getattr(result, "owed", None) for result in results] == [2, 1, 5, 5]
        assert all(getattr(result, "attempts", 0) == 2 for result in results)
        assert first.owed == 5 and second.owed == 5
        await first.close()
        await second.close()
        assert await client.balance() == before - 10
