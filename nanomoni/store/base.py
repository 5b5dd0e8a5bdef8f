"""The storage interfaces. Every method that moves money or advances a channel
is one atomic step in the store; the store never verifies signatures or proofs.

Every store call has a deadline (the `timeout` given to the store's factory):
a call that misses it, or finds the store down, raises StoreUnavailable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Protocol

import msgspec

from nanomoni import config
from nanomoni.errors import Code, NanoMoniError
from nanomoni.protocol.model import (
    Account,
    CasResult,
    ChannelTerms,
    Closure,
    IssuerChannel,
    Opened,
    PaymentState,
    VendorView,
)

DEFAULT_TIMEOUT = config.STORE_TIMEOUT  # seconds per store call (SPEC §7 --store-timeout)
REQUEST_MEMORY = 600.0  # seconds a paid request id is remembered (SPEC §11: 10 minutes)


class StoreUnavailable(NanoMoniError):
    """The store failed or missed the call's deadline (SPEC §6: 503 `store_unavailable`).

    The outcome of a write that raised this is unknown: it may never run, may
    have been running at the deadline, or (Redis) may still run once a stalled
    server resumes and reads the request already sent. So the answer to a 503
    is to retry the SAME request, and every transition must be safe to repeat:
    a stored payment comes back as its replay, a settlement by its proof
    digest, a registration by its key, an open by its v1.1 idempotency key
    (SPEC §4.3). A deposit is not (it adds again).
    """

    RETRY_AFTER = 1  # seconds a client is told to wait

    def __init__(self, reason: str) -> None:
        super().__init__(
            Code.store_unavailable,
            "the store is unavailable; retry shortly",
            retry_after=self.RETRY_AFTER,
        )
        self.reason = reason  # for the log: which server, and what went wrong

    def __str__(self) -> str:
        return self.reason

    def __repr__(self) -> str:
        return f"StoreUnavailable({self.reason!r})"


class ChargeOutcome(StrEnum):
    """What one paywall step (SPEC §11) did."""

    charged = "charged"  # credit covered the price: consumed += price
    repeated = "repeated"  # the request id was already paid: serve again, charge nothing
    insufficient = "insufficient"  # not enough credit (a payment sent along stays stored)
    lost = "lost"  # the payment lost its compare-and-set: see `current`
    closing = "closing"  # the payment came for a closing channel: nothing stored


class Charge(msgspec.Struct, frozen=True, kw_only=True):
    """A channel's credit after a paywall step: owed by its best payment, consumed
    by the requests served so far (credit = owed − consumed)."""

    outcome: ChargeOutcome
    owed: int = 0
    consumed: int = 0
    current: PaymentState | None = None  # lost / closing: the stored state


class IssuerStore(Protocol):
    async def register(self, public_key_der_b64: str, initial_balance: int) -> Account:
        """Create the account with `initial_balance` unless it exists; never grants twice."""

    async def get_account(self, public_key_der_b64: str) -> Account | None: ...

    async def deposit(self, public_key_der_b64: str, amount: int) -> Account | None:
        """Add `amount`; None if the account does not exist."""

    async def open_channel(self, terms: ChannelTerms) -> Opened:
        """One atomic step: an earlier open with `terms.open_key` is answered with its
        channel (replayed, nothing moves); otherwise both parties registered (else
        not_registered), client balance >= amount (else insufficient_balance), root
        never used (else commitment_reused); debit client, create channel, mark root
        and open key used. Raises NanoMoniError."""

    async def get_channel(self, channel_id: str) -> IssuerChannel | None: ...

    async def settle(self, channel_id: str, closure: Closure) -> Closure:
        """One atomic exactly-once step: credit vendor `owed`, refund client
        `amount - owed`, close. `closure.client_balance/vendor_balance` are
        ignored on input and filled in on output. If already closed with the
        same `proof_digest`, return the stored closure unchanged; with another
        digest raise already_closed. Unknown channel: channel_not_found."""

    async def ping(self, timeout: float | None = None) -> None:
        """Raise StoreUnavailable unless the store answers within `timeout` seconds
        (default: the store's deadline). A closed store has nothing to check."""

    async def close(self) -> None: ...


class VendorStore(Protocol):
    async def load(self, channel_id: str, node_keys: Sequence[int] = ()) -> VendorView:
        """Accepted state, the requested Merkle nodes (None where unknown), closing flag."""

    async def compare_and_set(
        self,
        channel_id: str,
        new: PaymentState,
        nodes: Mapping[int, bytes],
        expected: int | None = None,
    ) -> CasResult:
        """One atomic step: store `new` and `nodes` only if the channel is not
        closing and no state with index >= new.index is stored — and, given
        `expected`, only if the stored index is exactly that (0: no state)."""

    async def load_many(
        self, requests: Sequence[tuple[str, Sequence[int]]]
    ) -> list[VendorView | StoreUnavailable]:
        """`load` of many (distinct) channels, each with its node keys, in one round
        trip (Redis Cluster: one per slot). A read that failed leaves its
        StoreUnavailable in its channel's place."""

    async def compare_and_set_many(
        self, writes: Sequence[tuple[str, int, PaymentState, Mapping[int, bytes]]]
    ) -> list[CasResult | StoreUnavailable]:
        """For many (distinct) channels in one round trip (Redis Cluster: one per
        slot), each its own atomic step: (channel, expected index, new state, nodes)
        stores `new` and `nodes` only if the channel is not closing and its stored
        index is still the expected one (0: no state) — what the caller decided
        against — and `new.index` is above it; else `lost` (or `closing`) with the
        current state. A write that failed (its outcome unknown) leaves its
        StoreUnavailable in its channel's place."""

    async def begin_close(self, channel_id: str) -> PaymentState | None:
        """Atomically mark the channel closing (no more payments) and return its state."""

    async def nodes(self, channel_id: str, node_keys: Sequence[int]) -> list[bytes | None]: ...

    async def record_settlement(self, channel_id: str, closure: Closure) -> None:
        """Remember the issuer's settlement (idempotent)."""

    async def settlement(self, channel_id: str) -> Closure | None: ...

    async def charge(
        self,
        channel_id: str,
        price: int,
        *,
        new: PaymentState | None = None,
        nodes: Mapping[int, bytes] | None = None,
        expected: int | None = None,
        request_id: str | None = None,
        minimum: int = 0,
        remember: float = REQUEST_MEMORY,
    ) -> Charge:
        """One atomic paywall step (SPEC §11). A `request_id` already paid within
        `remember` seconds → repeated, nothing changes. Else `new` (if given) is stored
        with `nodes` (against `expected`) exactly as `compare_and_set` would (closing /
        lost change nothing);
        then, if owed − consumed ≥ max(price, minimum): consumed += price and the
        request id is remembered → charged; otherwise insufficient. A channel without
        a stored payment has no credit and gets no record."""

    async def refund(self, channel_id: str, amount: int, request_id: str | None = None) -> Charge:
        """Give back `amount` of a charge (consumed −= amount; never below 0) and
        forget its request id: a request that was charged but not served."""

    async def credit(self, channel_id: str) -> Charge:
        """The channel's owed and consumed amounts (outcome: charged)."""

    async def ping(self, timeout: float | None = None) -> None:
        """Raise StoreUnavailable unless the store answers within `timeout` seconds
        (default: the store's deadline). A closed store has nothing to check."""

    async def close(self) -> None: ...
