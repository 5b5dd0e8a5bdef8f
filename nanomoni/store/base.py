"""The storage interfaces. Every method that moves money or advances a channel
is one atomic step in the store; the store never verifies signatures or proofs.

Time (SPEC §4.6): the issuer store judges expiry and dispute deadlines with its
own clock inside each atomic step (SQLite: the host's, in the write
transaction; Redis: TIME in the script). Whatever touches a channel first
applies what is due to it: an expired open channel starts closing at its
expiry, a closing channel past its deadline is finalized. So a reader never
sees a state that should have changed, and with several issuer workers exactly
one of them moves the money.

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
from nanomoni.protocol.audit import Ledger, VendorChannel
from nanomoni.protocol.model import (
    Account,
    CasResult,
    ChannelTerms,
    Closing,
    Closure,
    IssuerChannel,
    Opened,
    PaymentState,
    Settled,
    ToppedUp,
    VendorView,
)

DEFAULT_TIMEOUT = config.STORE_TIMEOUT  # seconds per store call (SPEC §7 --store-timeout)
REQUEST_MEMORY = 600.0  # seconds a paid request id is remembered (SPEC §11: 10 minutes)
DEFAULT_DISPUTE_WINDOW_US = round(config.DISPUTE_WINDOW * 1_000_000)


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


class Charge(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A channel's credit after a paywall step: owed by its best payment, consumed
    by the requests served so far (credit = owed − consumed)."""

    outcome: ChargeOutcome
    owed: int = 0
    consumed: int = 0
    current: PaymentState | None = None  # lost / closing: the stored state


class IssuerStore(Protocol):
    async def register(self, public_key_der_b64: str, initial_balance: int) -> Account:
        """Create the account with `initial_balance` unless it exists; never grants twice."""

    async def get_account(self, public_key_der_b64: str) -> Account | None:
        """The balance after applying what is due to the account's channels (a finalization
        refunds the client)."""

    async def deposit(self, public_key_der_b64: str, amount: int) -> Account | None:
        """Add `amount`; None if the account does not exist."""

    async def open_channel(
        self, terms: ChannelTerms, *, dispute_window_us: int = DEFAULT_DISPUTE_WINDOW_US
    ) -> Opened:
        """One atomic step: an earlier open with `terms.open_key` is answered with its
        channel (replayed, nothing moves); otherwise both parties registered (else
        not_registered), client balance >= amount (else insufficient_balance), root
        never used (else commitment_reused); debit client, create the channel (open,
        expiring `terms.ttl_us` after now unless None, with this dispute window), record
        its `open` receipt, mark root and open key used. Raises NanoMoniError."""

    async def get_channel(self, channel_id: str) -> IssuerChannel | None:
        """The channel with what is due applied (writes only when something is)."""

    async def settle(self, channel_id: str, closure: Closure, *, final: bool = True) -> Settled:
        """One atomic exactly-once step on an open or closing channel.

        final: credit the vendor what `closure.owed` adds to what it was credited,
        refund the client the rest of the amount, close, record a `settlement`
        receipt. A closed channel settled with the same `proof_digest` answers the
        original result (replayed); any other proof (also after a finalization) is
        already_closed.
        checkpoint (final=False): only on an open channel (else channel_closed):
        credit the vendor `owed - vendor_credited` and record a `checkpoint` receipt;
        owed <= vendor_credited moves nothing and answers the latest receipt.
        owed > amount: exceeds_amount. Unknown channel: channel_not_found.
        `closure.client_balance/vendor_balance/closed_at` are ignored on input."""

    async def client_close(self, channel_id: str) -> IssuerChannel:
        """Start the dispute window of an open channel now (deadline = now + its window);
        a closing or closed channel is answered as it is. channel_not_found."""

    async def top_up(
        self, channel_id: str, amount: int, nonce: bytes, digest: bytes
    ) -> ToppedUp:
        """One atomic step: the same nonce again answers its first top-up (replayed) if
        `digest` matches, else duplicate_mismatch; the channel must be open (else
        channel_closed) and the client's balance >= amount (else insufficient_balance):
        debit the client, raise the channel amount, record a `top_up` receipt."""

    async def closing_channels(self, vendor_public_key_der_b64: str) -> Closing:
        """The vendor's channels in their dispute window, after applying what is due."""

    async def finalize_due(self, limit: int) -> int:
        """Apply what is due (expiry → closing, deadline → finalization) to at most about
        `limit` channels, oldest first; how many it advanced (call again while that is
        `limit` or more). Safe from any number of workers at once."""

    async def overdue(self) -> int:
        """Channels still closing after their dispute deadline (should be 0)."""

    async def ledger(self) -> Ledger:
        """The whole ledger as stored, read at one instant (nothing due is applied):
        what the audit and the operator's stats are computed from. Costs a read of
        every account, channel and receipt."""

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

    async def remember_terms(self, channel_id: str, terms: ChannelTerms) -> None:
        """Keep the terms payments on the channel are accepted under (for the audit),
        unless terms with an amount at least as large are kept already (a top-up only
        raises it). Written before the first payment the vendor accepts under them."""

    async def audit_records(self) -> list[VendorChannel]:
        """Every channel's accepted state, closing flag, settlement and kept terms, each
        channel read at one instant (nodes left empty: `nodes` reads them)."""

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
