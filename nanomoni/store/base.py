"""The storage interfaces. Every method that moves money or advances a channel
is one atomic step in the store; the store never verifies signatures or proofs.

Every store call has a deadline (the `timeout` given to the store's factory):
a call that misses it, or finds the store down, raises StoreUnavailable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

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

    async def ping(self, timeout: float | None = None) -> None:
        """Raise StoreUnavailable unless the store answers within `timeout` seconds
        (default: the store's deadline). A closed store has nothing to check."""

    async def close(self) -> None: ...
