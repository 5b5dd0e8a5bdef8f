"""What every payment mode provides, and the rules all of them share.

A mode is one `ModeRules` object: the payment and settlement it expects, how
its index and owed amount follow from a payment, how a payment is verified
against the vendor's accepted state (and what the store must keep), when a
payment is a replay, how a settlement is built and checked, and the client's
payer that produces its payments. The flows in `protocol.payments`,
`protocol.settlement` and `protocol.opening` call these and never ask which
mode they hold.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import msgspec

from nanomoni import crypto
from nanomoni.encoding import b64encode, canonical_json, public_key_der
from nanomoni.errors import Code, NanoMoniError
from nanomoni.protocol.messages import Payment, Settlement
from nanomoni.protocol.model import ChannelTerms, Mode, PaymentState, VendorView

HASH_LEN = 32
# SPEC §7: no proof may carry more siblings than this, whatever the tree.
MAX_SIBLINGS = 64

P = TypeVar("P", bound=Payment)
S = TypeVar("S", bound=Settlement)


@dataclass(frozen=True)
class CommitmentMembers:
    """Wire names of the three members a committed mode adds to opens and channel views."""

    root: str
    unit: str
    max: str

    @property
    def names(self) -> tuple[str, str, str]:
        return (self.root, self.unit, self.max)


class Verified(msgspec.Struct, frozen=True, gc=False):
    """What a valid payment leaves for the store: its proof blob and new Merkle nodes."""

    proof: bytes
    nodes: dict[int, bytes]


class SettledProof(msgspec.Struct, frozen=True, kw_only=True):
    """What a valid settlement proves: the index, the proof's identity, and for
    signature mode the close members the issuer's channel view shows."""

    index: int
    proof: bytes
    close_payload_b64: str | None = None
    client_close_signature_b64: str | None = None
    vendor_close_signature_b64: str | None = None


class Signer(Protocol):
    """A private key (`crypto.SigningKey` or a wallet) as the rules use it."""

    @property
    def public_key_der(self) -> bytes: ...

    def sign(self, message: bytes) -> bytes: ...

    def sign_many(self, messages: Sequence[bytes], threads: int = 0) -> list[bytes]: ...


class Payer(Protocol):
    """Client side: builds payments against the state the vendor has ACCEPTED.

    Building an index twice without `accepted` in between yields the identical
    payment, which is what makes a retry an exact replay.
    """

    channel_id: str
    last: int  # the vendor's accepted index (0 = nothing accepted yet)
    max_index: int  # the highest index a proof exists for

    @property
    def root(self) -> bytes | None: ...  # the commitment the open request carries

    def payment(self, index: int) -> Payment: ...

    def payments(self, indices: Sequence[int]) -> Sequence[Payment]:
        """A run for increasing indices, each built as if the ones before it were
        accepted; afterwards the payer stands as if all were (load generators)."""
        ...

    def accepted(self, index: int) -> None: ...


class ModeRules(ABC, Generic[P, S]):
    """One payment mode (SPEC §5.1–§5.5)."""

    mode: Mode
    payment_type: type[P]
    settlement_type: type[S]
    index_name: str  # what the index is called in bodies and messages
    response_index: str | None  # member carrying the index in payment answers
    members: CommitmentMembers | None  # None: the mode commits to nothing at open
    # Rough vendor µs to verify one small payment; a paying client prefers cheap modes.
    payment_cost: int = 10

    # --- index and amount ---------------------------------------------------------

    @abstractmethod
    def index(self, payment: P) -> int:
        """What must strictly increase: k, i, or the cumulative amount."""

    def owed(self, terms: ChannelTerms, index: int) -> int:
        return index if terms.unit_value is None else index * terms.unit_value

    def check_index(self, terms: ChannelTerms, index: int) -> int:
        """SPEC §5.0's range rules (shared by payments and settlements); the owed amount."""
        if index < 1:
            raise NanoMoniError(
                Code.invalid_amount, f"{self.index_name} must be at least 1, got {index}"
            )
        if terms.max_index is not None and index > terms.max_index:
            raise NanoMoniError(
                Code.exceeds_max,
                f"{self.index_name} {index} exceeds the channel maximum {terms.max_index}",
            )
        owed = self.owed(terms, index)
        if owed > terms.amount:
            raise NanoMoniError(
                Code.exceeds_amount, f"owed {owed} exceeds the channel amount {terms.amount}"
            )
        return owed

    # --- the vendor's decision ------------------------------------------------------

    def payment_node_keys(self, terms: ChannelTerms, payment: P) -> list[int]:
        """Merkle nodes the vendor loads with the state before deciding."""
        return []

    def hash_walk(self, terms: ChannelTerms, accepted: int, payment: P) -> int:
        """Hashes verifying `payment` walks after the accepted index `accepted`, where
        that is unbounded by the proof's size (a PayWord step). The vendor caps it
        (`--max-hashes`) and runs long walks off its event loop."""
        return 0

    @abstractmethod
    def is_replay(self, terms: ChannelTerms, stored: PaymentState, payment: P) -> bool:
        """Same index as the accepted payment: is it the same payment?"""

    @abstractmethod
    def verify(self, terms: ChannelTerms, view: VendorView, payment: P) -> Verified:
        """The proof to store, or invalid_proof / invalid_signature."""

    # --- batches: the costly check presumed now, run later with the batch's others ----------
    # A mode whose verification is one native check that the core can run in bulk
    # (a signature, a hash walk) overrides these three; the others verify at once.

    def presume(
        self, terms: ChannelTerms, view: VendorView, payment: P, checks: list[Any]
    ) -> Verified:
        """What `verify` returns if the payment's costly check passes; that check is
        appended to `checks` (for `run_checks`) instead of run. Default: verify now."""
        return self.verify(terms, view, payment)

    def presume_replay(
        self, terms: ChannelTerms, stored: PaymentState, payment: P, checks: list[Any]
    ) -> bool:
        """`is_replay`, its costly check presumed and appended to `checks` like `presume`'s."""
        return self.is_replay(terms, stored, payment)

    def run_checks(self, checks: Sequence[Any]) -> list[bool]:
        """The outcome of each check `presume` collected, in one native call where the
        core has one. The GIL is released: callers may run this off their event loop."""
        if checks:
            raise NotImplementedError(f"{self.mode.value} presumes no checks")
        return []

    def check_cost(self, checks: Sequence[Any]) -> int:
        """What running `checks` costs, in hash steps (a service runs more than
        crypto.INLINE_HASHES of them off its event loop)."""
        return 0

    # --- settlement -------------------------------------------------------------------

    def settlement_node_keys(self, terms: ChannelTerms, state: PaymentState) -> list[int]:
        """Merkle nodes the vendor loads to build the settlement of `state`."""
        return []

    @abstractmethod
    def build_settlement(
        self,
        terms: ChannelTerms,
        state: PaymentState,
        nodes: Sequence[bytes | None],
        vendor_key: Signer,
        *,
        final: bool | None = None,
    ) -> S:
        """Vendor side: the signed settlement of the accepted state; `final=False` makes
        it a checkpoint (SPEC §4.5), None leaves `final` out (a final settlement)."""

    @abstractmethod
    def check_settlement(self, terms: ChannelTerms, body: S) -> SettledProof:
        """Issuer side: what a settlement proves, or the first rule it breaks."""

    # --- the client ---------------------------------------------------------------------

    @abstractmethod
    def create_payer(
        self, key: Signer, *, max_index: int, hash_alg: str, seed: bytes | None = None
    ) -> Payer:
        """Fresh secrets (if the mode commits to any) and the payer holding them; every
        secret derives from `seed` (32 random bytes unless given: a given seed makes the
        commitment reproducible). `channel_id` is set once the issuer opened the channel."""


# --- helpers the modes share ------------------------------------------------------------


def check_signature(public_key_b64: str, message: bytes, signature: bytes, field: str) -> None:
    if not crypto.verify_signature(public_key_der(public_key_b64), message, signature):
        raise NanoMoniError(Code.invalid_signature, f"invalid signature: {field} does not verify")


def check_vendor_key(terms: ChannelTerms, vendor_key: str) -> None:
    if vendor_key != terms.vendor_public_key_der_b64:
        raise NanoMoniError(
            Code.invalid_signature,
            "invalid signature: vendor_public_key_der_b64 is not this channel's vendor key",
        )


def settlement_message(channel_id: str, members: dict[str, object], final: bool | None) -> bytes:
    """What the vendor signs at settlement: the channel id, the mode's proof members and
    `final` when the body carries it (canonical JSON drops it when None)."""
    return canonical_json({"channel_id": channel_id, **members, "final": final})


def b64_list(values: Sequence[bytes]) -> list[str]:
    return [b64encode(value) for value in values]


def depth_of(terms: ChannelTerms) -> int:
    assert terms.max_index is not None
    return crypto.tree_depth(terms.max_index)


def invalid_proof(detail: str) -> NanoMoniError:
    return NanoMoniError(Code.invalid_proof, detail)
