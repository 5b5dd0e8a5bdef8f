"""The data every layer passes around: modes, channel terms and states, receipts,
payment state.

Times the store decides with (expiry, dispute deadline) are integer microseconds
since the Unix epoch, by the store's clock; views show them as ISO-8601 (SPEC §1).
The structs a payment allocates are `gc=False`: they never hold a reference
cycle, so the cyclic collector need not track them (tracked, it took a fifth
of a batch's CPU).
"""

from __future__ import annotations

from enum import StrEnum

import msgspec


class Mode(StrEnum):
    signature = "signature"
    payword = "payword"
    paytree = "paytree"
    paytree_first_opt = "paytree_first_opt"
    paytree_second_opt = "paytree_second_opt"


class ChannelTerms(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """What the issuer fixed at open; never changes afterwards."""

    id: str  # UUID
    channel_id: str
    mode: Mode
    client_public_key_der_b64: str
    vendor_public_key_der_b64: str
    salt_b64: str
    amount: int
    hash_alg: str
    created_at: str
    root: bytes | None = None  # PayWord / PayTree commitment
    unit_value: int | None = None
    max_index: int | None = None  # max_k or max_i
    open_key: bytes = b""  # what identifies the open request (protocol.opening.open_key)
    # Issuer side: the lifetime the open asked for (None: the channel never expires).
    ttl_us: int | None = None
    # When the channel expires (µs, store clock): set by the store at open and shown in
    # views; None for a channel without expiry (or a view from an older issuer).
    expires_at: int | None = None


class ChannelState(StrEnum):
    """SPEC §4.6: open → closing → closed."""

    open = "open"
    closing = "closing"  # the dispute window runs: the vendor may still settle
    closed = "closed"


class ReceiptKind(StrEnum):
    open = "open"
    settlement = "settlement"
    checkpoint = "checkpoint"
    finalization = "finalization"
    top_up = "top_up"


class Receipt(msgspec.Struct, frozen=True, kw_only=True):
    """What the issuer signs for a money movement on a channel (SPEC §4.5)."""

    channel_id: str
    kind: ReceiptKind
    amount: int  # the channel amount after the step
    owed: int  # owed amount of the proof used (0 when none)
    vendor_credited: int  # total credited to the vendor after the step
    client_refund: int  # what this step refunded to the client
    seq: int  # 1, 2, ... per channel
    at: str  # ISO-8601, the store's clock


class SignedReceipt(msgspec.Struct, frozen=True, kw_only=True):
    receipt: Receipt
    signature: bytes  # the issuer's, over protocol.lifecycle.receipt_message(receipt)


class ChannelInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A channel as the issuer shows it (SPEC §4.3, §4.4): its terms (with the current
    amount and expiry) and where it stands."""

    terms: ChannelTerms
    balance: int = 0  # what the vendor got once closed
    is_closed: bool = False
    closed_at: str | None = None
    state: ChannelState = ChannelState.open
    dispute_deadline: int | None = None  # µs, set once closing starts
    vendor_credited: int = 0
    receipts: tuple[SignedReceipt, ...] = ()


class Closure(msgspec.Struct, frozen=True, kw_only=True):
    """How an issuer channel was settled (what a repeated settlement must match)."""

    owed: int
    proof_digest: bytes  # identifies the settled proof, signatures excluded
    client_balance: int  # balances right after settlement, answered again on retry
    vendor_balance: int
    closed_at: str
    close_payload_b64: str | None = None  # signature mode only
    client_close_signature_b64: str | None = None
    vendor_close_signature_b64: str | None = None


class IssuerChannel(msgspec.Struct, frozen=True, kw_only=True):
    """The issuer's record: terms (amount = the CURRENT amount, expires_at filled in),
    where the channel stands, and every receipt so far (by seq).

    `closure` is set once closed: by a settlement (its proof and signatures) or by
    finalization (proof_digest empty, owed = vendor_credited)."""

    terms: ChannelTerms
    closure: Closure | None = None
    state: ChannelState = ChannelState.open
    dispute_deadline: int | None = None  # µs, kept once closing started
    vendor_credited: int = 0
    receipts: tuple[Receipt, ...] = ()

    @property
    def is_closed(self) -> bool:
        return self.state is ChannelState.closed

    @property
    def locked(self) -> int:
        """What the channel still holds of the client's money (SPEC §4.5)."""
        return 0 if self.is_closed else self.terms.amount - self.vendor_credited


class Account(msgspec.Struct, frozen=True, kw_only=True):
    public_key_der_b64: str
    balance: int


class Opened(msgspec.Struct, frozen=True, kw_only=True):
    """What an open did: the channel (the earlier one when `replayed`), the client's
    account after it and the channel's `open` receipt."""

    terms: ChannelTerms
    account: Account
    receipt: Receipt
    replayed: bool = False


class Settled(msgspec.Struct, frozen=True, kw_only=True):
    """What a settlement (final) or a checkpoint did: balances right after the step,
    its receipt, and the closure once the channel is closed. `replayed`: nothing moved
    now (a repeated settlement, or a checkpoint owing nothing new)."""

    client_balance: int
    vendor_balance: int
    receipt: Receipt
    closure: Closure | None = None
    replayed: bool = False


class ToppedUp(msgspec.Struct, frozen=True, kw_only=True):
    """What a top-up did (or, `replayed`, had done for this nonce)."""

    channel: IssuerChannel
    receipt: Receipt
    replayed: bool = False


class ClosingChannel(msgspec.Struct, frozen=True, kw_only=True):
    terms: ChannelTerms
    dispute_deadline: int  # µs


class Closing(msgspec.Struct, frozen=True, kw_only=True):
    """A vendor's channels in their dispute window, as of the store's `now` (µs)."""

    now: int
    channels: list[ClosingChannel]


class PaymentState(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """The vendor's accepted payment for a channel.

    `index` is what must strictly increase (k, i, or the cumulative amount in
    signature mode); `proof` is an opaque blob packed by the mode's rules.
    """

    index: int
    owed: int
    proof: bytes
    created_at: str


class VendorView(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One read of a vendor channel: accepted state, requested nodes, closing flag."""

    state: PaymentState | None
    nodes: list[bytes | None]
    closing: bool  # closure has begun or finished: no payment may be accepted

    @property
    def accepted_index(self) -> int:
        """The index of the accepted state (0: none yet)."""
        return self.state.index if self.state is not None else 0


class CasOutcome(StrEnum):
    stored = "stored"
    lost = "lost"  # a state with index >= ours is stored: see `current`
    closing = "closing"


class CasResult(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    outcome: CasOutcome
    current: PaymentState | None = None
