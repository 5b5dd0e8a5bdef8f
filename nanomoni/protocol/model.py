"""The data every layer passes around: modes, channel terms, payment state.

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


class ChannelInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A channel as the issuer shows it (SPEC §4.3, §4.4): its terms and where it stands."""

    terms: ChannelTerms
    balance: int = 0  # the settled owed amount once closed
    is_closed: bool = False
    closed_at: str | None = None


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
    terms: ChannelTerms
    closure: Closure | None = None

    @property
    def is_closed(self) -> bool:
        return self.closure is not None


class Account(msgspec.Struct, frozen=True, kw_only=True):
    public_key_der_b64: str
    balance: int


class Opened(msgspec.Struct, frozen=True, kw_only=True):
    """What an open did: the channel (the earlier one when `replayed`) and the
    client's account after it."""

    terms: ChannelTerms
    account: Account
    replayed: bool = False


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
