"""The vendor's payment decision (SPEC §5.0): one per payment, no I/O.

The caller loads the channel's `VendorView` (with the nodes named by
`rules.payment_node_keys`), calls `decide_payment`, and stores the decision's
state and nodes with one compare-and-set. The mode's rules verify; the order
of checks is decided here, once for every mode.
"""

from __future__ import annotations

from typing import Any

import msgspec

from nanomoni import config
from nanomoni.errors import Code, NanoMoniError
from nanomoni.protocol.messages import Payment
from nanomoni.protocol.model import (
    ChannelInfo,
    ChannelState,
    ChannelTerms,
    PaymentState,
    VendorView,
)
from nanomoni.protocol.modes import AnyRules


class Decision(msgspec.Struct, frozen=True, gc=False):
    replay: bool  # exact replay of the accepted payment (HTTP 200): nothing to store
    state: PaymentState  # the new accepted state, or for a replay the stored one
    nodes: dict[int, bytes]  # Merkle nodes to store with the state (second-opt)


def require_mode(rules: AnyRules, terms: ChannelTerms, what: str) -> None:
    """A channel may only be used through its own mode's paths."""
    if rules.mode is not terms.mode:
        raise NanoMoniError(
            Code.mode_mismatch,
            f"{what} for a {rules.mode.value} channel, but this is a {terms.mode.value} channel",
        )


def learned_terms(
    channel: ChannelInfo, vendor_public_key_der_b64: str, *, settling: bool = False
) -> ChannelTerms:
    """Vendor side: the terms of a channel read from the issuer, if it may take payments
    here (SPEC §5.0): open (not closing or closed) and ours. `settling`: terms to settle
    with, whatever the channel's state."""
    terms = channel.terms
    if not settling and (channel.is_closed or channel.state is not ChannelState.open):
        raise NanoMoniError(
            Code.channel_closed, f"channel {terms.channel_id} is {channel.state.value}"
        )
    if terms.vendor_public_key_der_b64 != vendor_public_key_der_b64:
        raise NanoMoniError(
            Code.wrong_vendor, f"channel {terms.channel_id} pays another vendor key"
        )
    return terms


def decide_payment(
    rules: AnyRules,
    terms: ChannelTerms,
    view: VendorView,
    payment: Payment,
    *,
    now: str,
    max_hashes: int = config.MAX_HASHES,
) -> Decision:
    """Accept, replay or refuse one payment, in SPEC §5.0's order of checks."""
    return _decide(rules, terms, view, payment, now, max_hashes, None)


def presume_payment(
    rules: AnyRules,
    terms: ChannelTerms,
    view: VendorView,
    payment: Payment,
    checks: list[Any],
    *,
    now: str,
    max_hashes: int = config.MAX_HASHES,
) -> Decision:
    """`decide_payment` with the mode's costly check presumed to pass and appended to
    `checks` (`rules.presume`). The decision is exact once `rules.run_checks` passes
    every check it appended; a batch decides its items this way, then checks them all
    in one native call."""
    return _decide(rules, terms, view, payment, now, max_hashes, checks)


def _decide(
    rules: AnyRules,
    terms: ChannelTerms,
    view: VendorView,
    payment: Payment,
    now: str,
    max_hashes: int,
    checks: list[Any] | None,  # None: verify now; else presume (no closures: a batch's hot loop)
) -> Decision:
    require_mode(rules, terms, "payment")
    if not isinstance(payment, rules.payment_type):
        raise NanoMoniError(
            Code.mode_mismatch, f"a {type(payment).__name__} is not a {rules.mode.value} payment"
        )
    if payment.channel_id is not None and payment.channel_id != terms.channel_id:
        raise NanoMoniError(
            Code.id_mismatch,
            f"body channel_id {payment.channel_id} differs from the path's {terms.channel_id}",
        )
    if view.closing:
        raise NanoMoniError(Code.channel_closed, f"channel {terms.channel_id} is closing or closed")
    index = rules.index(payment)
    name = rules.index_name
    if index < 1:
        raise NanoMoniError(Code.invalid_amount, f"{name} must be at least 1, got {index}")

    stored = view.state
    if stored is not None and index == stored.index:
        if (
            rules.is_replay(terms, stored, payment)
            if checks is None
            else rules.presume_replay(terms, stored, payment, checks)
        ):
            return Decision(replay=True, state=stored, nodes={})
        raise NanoMoniError(
            Code.duplicate_mismatch,
            f"duplicate {name} {index} with a different proof than the accepted one",
        )
    if stored is not None and index < stored.index:
        raise NanoMoniError(
            Code.non_monotonic,
            f"{name} must be increasing: got {index}, already accepted {stored.index}",
        )
    owed = rules.check_index(terms, index)
    accepted = stored.index if stored is not None else 0
    if rules.hash_walk(terms, accepted, payment) > max_hashes:
        raise NanoMoniError(
            Code.exceeds_max,
            f"{name} {index} exceeds the accepted {name} {accepted} by more than "
            f"{max_hashes} hashes",
        )
    verified = (
        rules.verify(terms, view, payment)
        if checks is None
        else rules.presume(terms, view, payment, checks)
    )
    state = PaymentState(index=index, owed=owed, proof=verified.proof, created_at=now)
    return Decision(replay=False, state=state, nodes=verified.nodes)
