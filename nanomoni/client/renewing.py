"""A channel that does not run out (SPEC §4.6): what a long-lived payer uses.

A signature channel grows by top-ups; a hash-chain channel (PayWord, PayTree) has
a fixed number of units, so a successor with the same terms is opened while the
current one still has `margin` of its units left, payments move to it when the
current one is used up, and the old one is closed (the client's way: the vendor
settles it, else the issuer refunds at its dispute deadline). The caller only
sees `pay()`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any

from nanomoni.client.session import Channel, PaymentResult
from nanomoni.errors import Code, NanoMoniError
from nanomoni.protocol.model import ChannelInfo, SignedReceipt


class RenewingChannel:
    def __init__(
        self,
        first: Channel,
        open_next: Callable[[], Coroutine[Any, Any, Channel]],
        *,
        amount: int,
        margin: float,
    ) -> None:
        self.current = first
        self.retired: list[Channel] = []  # used up, closed (or closing)
        self._open_next = open_next
        self._amount = amount  # what each successor locks, and each top-up adds
        self._margin = margin
        self._renewal: asyncio.Task[Channel | SignedReceipt] | None = None
        self._closing: list[asyncio.Task[ChannelInfo]] = []
        self._lock = asyncio.Lock()

    @property
    def channels(self) -> list[Channel]:
        return [*self.retired, self.current]

    @property
    def channel_id(self) -> str:
        return self.current.channel_id

    @property
    def owed(self) -> int:
        """What every channel of this payer owes the vendor, in total."""
        return sum(channel.owed for channel in self.channels)

    @property
    def receipts(self) -> list[SignedReceipt]:
        return [signed for channel in self.channels for signed in channel.receipts.values()]

    async def pay(self, units: int = 1) -> PaymentResult:
        async with self._lock:
            if units > self.current.remaining:
                await self._renew(units)
            result = await self.current.pay(units)
            if self._renewal is None and self._low():
                self._renewal = asyncio.create_task(self._prepare())
            return result

    def _low(self) -> bool:
        return self.current.remaining <= self._margin * self.current.max_index

    async def _prepare(self) -> Channel | SignedReceipt:
        """Before the current channel runs out: top it up, or open its successor."""
        if self.current.rules.members is None:  # the amount itself is the index
            return await self.current.top_up(self._amount)
        return await self._open_next()

    async def _renew(self, units: int) -> None:
        renewal, self._renewal = self._renewal, None
        done = await renewal if renewal is not None else await self._prepare()
        if isinstance(done, Channel):
            old, self.current = self.current, done
            self.retired.append(old)
            self._closing.append(asyncio.create_task(old.close()))
        if units > self.current.remaining:
            if isinstance(done, Channel):
                raise NanoMoniError(
                    Code.exceeds_max, f"{units} units exceed a whole channel of this payer"
                )
            await self.current.top_up(units - self.current.remaining)

    async def close(self) -> list[ChannelInfo]:
        """Close every channel (a successor opened but never paid on is closed too)."""
        async with self._lock:
            if self._renewal is not None:
                with contextlib.suppress(NanoMoniError):
                    done = await self._renewal
                    if isinstance(done, Channel):
                        self.retired.append(done)
                self._renewal = None
            infos = await asyncio.gather(*self._closing)
            self._closing.clear()
            last = await self.current.close()
            later = [
                await channel.close()
                for channel in self.retired[len(infos) :]
                if channel is not self.current
            ]
            return [*infos, *later, last]
