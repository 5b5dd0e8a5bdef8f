"""The vendor's payment rules (SPEC §5): one decision per payment, no I/O.

The caller loads the channel's `VendorView` (with the nodes named by
`payment_node_keys`), calls `decide_payment`, and stores the decision's state
and nodes with one compare-and-set.

`PaymentState.proof` is packed per mode:
* signature: the client's signature over the cumulative amount;
* payword: the token;
* paytree: leaf ‖ the full path (depth siblings);
* paytree_first_opt: count ‖ leaf ‖ the full path, where count (one byte) is how
  many siblings the accepted body carried, so only that exact body is a replay;
* paytree_second_opt: leaf ‖ the siblings the body carried; the known-node set
  lives in the store's node map (`crypto.node_key`).
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from nanomoni import crypto, wire
from nanomoni.encoding import b64decode, canonical_json
from nanomoni.errors import Code, NanoMoniError
from nanomoni.protocol.model import ChannelTerms, Mode, PaymentState, VendorView
from nanomoni.protocol.modes import (
    HASH_LEN,
    MAX_SIBLINGS,
    MEMBERS,
    TREE_MODES,
    decode_siblings,
    key_der,
    require_mode,
)

DEFAULT_MAX_HASHES = 2**20

_PAYMENT_TYPES: dict[Mode, type[wire.Payment]] = {
    Mode.signature: wire.SignaturePayment,
    Mode.payword: wire.PaywordPayment,
    Mode.paytree: wire.PaytreePayment,
    Mode.paytree_first_opt: wire.PaytreePayment,
    Mode.paytree_second_opt: wire.PaytreePayment,
}


class Decision(msgspec.Struct, frozen=True):
    replay: bool  # exact replay of the accepted payment (HTTP 200): nothing to store
    state: PaymentState  # the new accepted state, or for a replay the stored one
    nodes: dict[int, bytes]  # second-opt: Merkle nodes to store with the state


# --- learning a channel -----------------------------------------------------------


def learned_channel_terms(
    mode: Mode, channel: wire.ChannelResponse, vendor_public_key_der_b64: str
) -> ChannelTerms:
    """Vendor side: the terms of a channel read from the issuer (SPEC §5.0)."""
    channel_mode = Mode.signature
    for candidate, (root_name, _, _) in MEMBERS.items():
        if getattr(channel, root_name) is not None:
            channel_mode = candidate
    require_mode(mode, channel_mode, "payment")
    if channel.is_closed:
        raise NanoMoniError(Code.channel_closed, f"channel {channel.channel_id} is closed")
    if channel.vendor_public_key_der_b64 != vendor_public_key_der_b64:
        raise NanoMoniError(
            Code.wrong_vendor, f"channel {channel.channel_id} pays another vendor key"
        )
    root: bytes | None = None
    unit_value: int | None = None
    max_index: int | None = None
    if mode in MEMBERS:
        root_name, unit_name, max_name = MEMBERS[mode]
        root = b64decode(getattr(channel, root_name), HASH_LEN, field=root_name)
        unit_value = getattr(channel, unit_name)
        max_index = getattr(channel, max_name)
    return ChannelTerms(
        id=channel.id or "",
        channel_id=channel.channel_id,
        mode=mode,
        client_public_key_der_b64=channel.client_public_key_der_b64,
        vendor_public_key_der_b64=channel.vendor_public_key_der_b64,
        salt_b64=channel.salt_b64,
        amount=channel.amount,
        hash_alg=channel.hash_alg,
        created_at=channel.created_at or "",
        root=root,
        unit_value=unit_value,
        max_index=max_index,
    )


# --- helpers shared with settlement -------------------------------------------------


def depth_of(terms: ChannelTerms) -> int:
    assert terms.max_index is not None
    return crypto.tree_depth(terms.max_index)


def signature_message(channel_id: str, cumulative_owed_amount: int) -> bytes:
    """What the client signs for a payment and both parties sign at closure (§4.5, §5.1)."""
    return canonical_json(
        {"channel_id": channel_id, "cumulative_owed_amount": cumulative_owed_amount}
    )


def _split(blob: bytes) -> list[bytes]:
    return [blob[j : j + HASH_LEN] for j in range(0, len(blob), HASH_LEN)]


def full_path(
    terms: ChannelTerms, state: PaymentState, nodes: Sequence[bytes | None]
) -> tuple[bytes, list[bytes]]:
    """(leaf, all depth siblings) of the accepted index, for settlement.

    `nodes` are the values of `settlement_node_keys` (used by second-opt only).
    """
    if terms.mode == Mode.paytree:
        leaf, *siblings = _split(state.proof)
        return leaf, siblings
    if terms.mode == Mode.paytree_first_opt:
        leaf, *siblings = _split(state.proof[1:])
        return leaf, siblings
    if terms.mode == Mode.paytree_second_opt:
        leaf = state.proof[:HASH_LEN]
        missing = [level for level, node in enumerate(nodes) if node is None]
        if missing or len(nodes) != depth_of(terms):
            raise NanoMoniError(
                Code.internal_error,
                f"the vendor store lacks path nodes at levels {missing} of channel "
                f"{terms.channel_id}",
            )
        return leaf, [node for node in nodes if node is not None]
    raise ValueError(f"{terms.mode.value} channels have no Merkle path")


def second_opt_path_keys(i: int, depth: int) -> list[int]:
    """For each level below the root: the path node's key, then its sibling's.

    Keys are `crypto.node_key` heap indices, so a parent is `key >> 1` and a
    sibling `key ^ 1`: plain integer steps on the hot path.
    """
    leaf_key = crypto.node_key(0, i, depth)
    return [(leaf_key >> level) ^ side for level in range(depth) for side in (0, 1)]


def payment_node_keys(terms: ChannelTerms, payment: wire.Payment) -> list[int]:
    """Nodes the vendor loads with the state before deciding (second-opt only)."""
    if terms.mode != Mode.paytree_second_opt or not isinstance(payment, wire.PaytreePayment):
        return []
    assert terms.max_index is not None
    if not 1 <= payment.i <= terms.max_index:
        return []  # refused before any node is needed; keys would not even be in the tree
    return second_opt_path_keys(payment.i, depth_of(terms))


# --- the decision -----------------------------------------------------------------


def _maybe_hash(text: str) -> bytes | None:
    """A 32-byte value for replay comparison; anything else simply matches nothing."""
    try:
        return b64decode(text, HASH_LEN)
    except NanoMoniError:
        return None


def _index_of(payment: wire.Payment) -> int:
    if isinstance(payment, wire.SignaturePayment):
        return payment.cumulative_owed_amount
    if isinstance(payment, wire.PaywordPayment):
        return payment.k
    return payment.i


def _sent_blob(payment: wire.PaytreePayment) -> bytes | None:
    """leaf ‖ siblings as sent, or None unless each is 32 bytes of base64.

    Fixed-size parts make equal blobs mean equal bodies, part by part.
    """
    parts = [_maybe_hash(payment.leaf_b64), *(_maybe_hash(s) for s in payment.siblings_b64)]
    if any(part is None for part in parts):
        return None
    return b"".join(part for part in parts if part is not None)


def _is_replay(terms: ChannelTerms, stored: PaymentState, payment: wire.Payment) -> bool:
    """Same index as the accepted payment: is it the same payment? (§5.1–§5.5)."""
    if isinstance(payment, wire.SignaturePayment):
        # Signature bytes are never compared (ECDSA has two valid forms): a valid
        # signature over the same amount is the same payment.
        _verify_client_signature(terms, payment)
        return True
    if isinstance(payment, wire.PaywordPayment):
        return _maybe_hash(payment.token_b64) == stored.proof
    sent = _sent_blob(payment)
    if terms.mode == Mode.paytree_first_opt:
        count = stored.proof[0]
        leaf_and_path = stored.proof[1:]
        return (
            len(payment.siblings_b64) == count
            and sent is not None
            and sent == leaf_and_path[: HASH_LEN * (count + 1)]
        )
    return sent == stored.proof


def _verify_client_signature(terms: ChannelTerms, payment: wire.SignaturePayment) -> bytes:
    signature = b64decode(payment.signature_b64, field="signature_b64")
    message = signature_message(terms.channel_id, payment.cumulative_owed_amount)
    if not crypto.verify_signature(key_der(terms.client_public_key_der_b64), message, signature):
        raise NanoMoniError(
            Code.invalid_signature,
            "invalid signature: signature_b64 is not the client's signature over the "
            "channel id and cumulative amount",
        )
    return signature


def _decode_tree_payment(payment: wire.PaytreePayment) -> tuple[bytes, list[bytes]]:
    if len(payment.siblings_b64) > MAX_SIBLINGS:
        raise NanoMoniError(
            Code.invalid_proof,
            f"invalid proof: {len(payment.siblings_b64)} siblings, at most {MAX_SIBLINGS} allowed",
        )
    leaf = b64decode(payment.leaf_b64, HASH_LEN, field="leaf_b64")
    siblings = decode_siblings(payment.siblings_b64)
    return leaf, siblings


def _wrong_count(sent: int, expected: int) -> NanoMoniError:
    return NanoMoniError(
        Code.invalid_proof,
        f"invalid proof: {sent} siblings sent, exactly {expected} expected",
    )


def _bad_path() -> NanoMoniError:
    return NanoMoniError(
        Code.invalid_proof, "invalid proof: the Merkle path does not match the commitment"
    )


def _verify_paytree(terms: ChannelTerms, payment: wire.PaytreePayment) -> bytes:
    assert terms.root is not None
    leaf, siblings = _decode_tree_payment(payment)
    depth = depth_of(terms)
    if len(siblings) != depth:
        raise _wrong_count(len(siblings), depth)
    if not crypto.verify_merkle(leaf, payment.i, siblings, terms.root, depth, terms.hash_alg):
        raise _bad_path()
    return leaf + b"".join(siblings)


def _verify_first_opt(
    terms: ChannelTerms, stored: PaymentState | None, payment: wire.PaytreePayment
) -> bytes:
    assert terms.root is not None
    leaf, sent = _decode_tree_payment(payment)
    depth = depth_of(terms)
    last = stored.index if stored is not None else None
    t = crypto.first_opt_levels(payment.i, last, depth)
    if len(sent) != t:
        raise _wrong_count(len(sent), t)
    if stored is None or t == depth:
        anchor = terms.root
        above = b""
    else:
        # node(t, i >> t) == node(t, last >> t): fold the accepted leaf t levels.
        # Stored layout: count (1 byte) ‖ leaf ‖ depth siblings.
        path = stored.proof
        last_siblings = [path[33 + 32 * j : 65 + 32 * j] for j in range(t)]
        anchor = crypto.merkle_fold(path[1:33], stored.index, last_siblings, terms.hash_alg)
        above = path[33 + 32 * t :]
    if crypto.merkle_fold(leaf, payment.i, sent, terms.hash_alg) != anchor:
        raise _bad_path()
    return bytes([t]) + leaf + b"".join(sent) + above


def _verify_second_opt(
    terms: ChannelTerms, view: VendorView, payment: wire.PaytreePayment
) -> tuple[bytes, dict[int, bytes]]:
    assert terms.root is not None
    leaf, sent = _decode_tree_payment(payment)
    depth = depth_of(terms)
    i = payment.i
    # view.nodes follows second_opt_path_keys: [2·level] = path node, [2·level + 1] = sibling.
    nodes = view.nodes
    if len(nodes) != 2 * depth:
        raise ValueError(
            f"view.nodes has {len(nodes)} entries; payment_node_keys asked for {2 * depth}"
        )

    def is_known(level: int, pos: int) -> bool:
        return nodes[2 * level + ((pos ^ (i >> level)) & 1)] is not None

    missing, stop = crypto.second_opt_levels(i, depth, is_known)
    if len(sent) != len(missing):
        raise _wrong_count(len(sent), len(missing))
    supplied = dict(zip(missing, sent, strict=True))
    new_nodes: dict[int, bytes] = {}
    current = leaf
    key = crypto.node_key(0, i, depth)  # the path node's heap index at each level
    for level in range(stop):
        new_nodes[key] = current
        if level in supplied:
            sibling = supplied[level]
            new_nodes[key ^ 1] = sibling
        else:
            known_sibling = nodes[2 * level + 1]
            assert known_sibling is not None  # second_opt_levels only skips known siblings
            sibling = known_sibling
        pair = current + sibling if key & 1 == 0 else sibling + current
        current = crypto.digest(pair, terms.hash_alg)
        key >>= 1
    if stop == depth:
        anchor = terms.root
    else:
        known_ancestor = nodes[2 * stop]
        assert known_ancestor is not None  # second_opt_levels stops at a known path node
        anchor = known_ancestor
    if current != anchor:
        raise _bad_path()
    return leaf + b"".join(sent), new_nodes


def decide_payment(
    mode: Mode,
    terms: ChannelTerms,
    view: VendorView,
    payment: wire.Payment,
    *,
    now: str,
    max_hashes: int = DEFAULT_MAX_HASHES,
) -> Decision:
    """Accept, replay or refuse one payment, in SPEC §5's order of checks."""
    require_mode(mode, terms.mode, "payment")
    if not isinstance(payment, _PAYMENT_TYPES[mode]):
        raise NanoMoniError(
            Code.mode_mismatch, f"a {type(payment).__name__} is not a {mode.value} payment"
        )
    if payment.channel_id is not None and payment.channel_id != terms.channel_id:
        raise NanoMoniError(
            Code.id_mismatch,
            f"body channel_id {payment.channel_id} differs from the path's {terms.channel_id}",
        )
    if view.closing:
        raise NanoMoniError(Code.channel_closed, f"channel {terms.channel_id} is closing or closed")
    index = _index_of(payment)
    name = (
        "cumulative_owed_amount"
        if mode == Mode.signature
        else ("k" if mode == Mode.payword else "i")
    )
    if index < 1:
        raise NanoMoniError(Code.invalid_amount, f"{name} must be at least 1, got {index}")

    stored = view.state
    if stored is not None and index == stored.index:
        if _is_replay(terms, stored, payment):
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
    if terms.max_index is not None and index > terms.max_index:
        raise NanoMoniError(
            Code.exceeds_max, f"{name} {index} exceeds the channel maximum {terms.max_index}"
        )
    previous = stored.index if stored is not None else 0
    if mode == Mode.payword and index - previous > max_hashes:
        raise NanoMoniError(
            Code.exceeds_max,
            f"k {index} exceeds the accepted k {previous} by more than {max_hashes} hashes",
        )
    owed = index if terms.unit_value is None else index * terms.unit_value
    if owed > terms.amount:
        raise NanoMoniError(
            Code.exceeds_amount, f"owed {owed} exceeds the channel amount {terms.amount}"
        )

    nodes: dict[int, bytes] = {}
    if isinstance(payment, wire.SignaturePayment):
        proof = _verify_client_signature(terms, payment)
    elif isinstance(payment, wire.PaywordPayment):
        assert terms.root is not None
        token = b64decode(payment.token_b64, HASH_LEN, field="token_b64")
        anchor = stored.proof if stored is not None else terms.root
        if not crypto.verify_payword(token, index - previous, anchor, terms.hash_alg):
            raise NanoMoniError(
                Code.invalid_proof, "invalid token: hash chain mismatch with the accepted token"
            )
        proof = token
    elif mode == Mode.paytree:
        proof = _verify_paytree(terms, payment)
    elif mode == Mode.paytree_first_opt:
        proof = _verify_first_opt(terms, stored, payment)
    else:
        proof, nodes = _verify_second_opt(terms, view, payment)
    state = PaymentState(index=index, owed=owed, proof=proof, created_at=now)
    return Decision(replay=False, state=state, nodes=nodes)


def payment_response(terms: ChannelTerms, state: PaymentState) -> wire.PaymentResponse:
    """The vendor's 201/200 body for the accepted state (SPEC §5.0)."""
    return wire.PaymentResponse(
        channel_id=terms.channel_id,
        cumulative_owed_amount=state.owed,
        created_at=state.created_at,
        k=state.index if terms.mode == Mode.payword else None,
        i=state.index if terms.mode in TREE_MODES else None,
    )
