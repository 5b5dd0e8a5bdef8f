"""Settlement (SPEC §4.5, §5.6): the vendor builds it, the issuer checks it."""

from __future__ import annotations

from collections.abc import Sequence

from nanomoni import crypto, wire
from nanomoni.encoding import b64decode, b64encode, canonical_json
from nanomoni.errors import Code, NanoMoniError
from nanomoni.protocol.model import ChannelTerms, Closure, Mode, PaymentState
from nanomoni.protocol.modes import (
    HASH_LEN,
    TREE_MODES,
    decode_siblings,
    key_der,
    require_mode,
)
from nanomoni.protocol.payments import depth_of, full_path, signature_message

Settlement = wire.SignatureSettlement | wire.PaywordSettlement | wire.PaytreeSettlement


def settlement_node_keys(terms: ChannelTerms, state: PaymentState) -> list[int]:
    """Second-opt: the keys of the accepted index's siblings, level 0 upward."""
    if terms.mode != Mode.paytree_second_opt:
        return []
    depth = depth_of(terms)
    return [crypto.node_key(level, (state.index >> level) ^ 1, depth) for level in range(depth)]


def _payword_message(channel_id: str, k: int, token_b64: str) -> bytes:
    return canonical_json({"channel_id": channel_id, "k": k, "token_b64": token_b64})


def _paytree_message(channel_id: str, i: int, leaf_b64: str, siblings_b64: list[str]) -> bytes:
    return canonical_json(
        {"channel_id": channel_id, "i": i, "leaf_b64": leaf_b64, "siblings_b64": siblings_b64}
    )


def build_settlement(
    terms: ChannelTerms,
    state: PaymentState,
    nodes: Sequence[bytes | None],
    vendor_key: crypto.SigningKey,
) -> Settlement:
    """Vendor side: the signed settlement of the accepted state.

    `nodes` are the values of `settlement_node_keys(terms, state)`.
    """
    if terms.mode == Mode.signature:
        message = signature_message(terms.channel_id, state.owed)
        return wire.SignatureSettlement(
            channel_id=terms.channel_id,
            cumulative_owed_amount=state.owed,
            client_close_signature_b64=b64encode(state.proof),
            vendor_close_signature_b64=b64encode(vendor_key.sign(message)),
        )
    if terms.mode == Mode.payword:
        token_b64 = b64encode(state.proof)
        message = _payword_message(terms.channel_id, state.index, token_b64)
        return wire.PaywordSettlement(
            vendor_public_key_der_b64=terms.vendor_public_key_der_b64,
            k=state.index,
            token_b64=token_b64,
            vendor_signature_b64=b64encode(vendor_key.sign(message)),
        )
    leaf, siblings = full_path(terms, state, nodes)
    leaf_b64 = b64encode(leaf)
    siblings_b64 = [b64encode(sibling) for sibling in siblings]
    message = _paytree_message(terms.channel_id, state.index, leaf_b64, siblings_b64)
    return wire.PaytreeSettlement(
        vendor_public_key_der_b64=terms.vendor_public_key_der_b64,
        i=state.index,
        leaf_b64=leaf_b64,
        siblings_b64=siblings_b64,
        vendor_signature_b64=b64encode(vendor_key.sign(message)),
    )


def _check_signature(public_key_b64: str, message: bytes, signature_b64: str, field: str) -> None:
    signature = b64decode(signature_b64, field=field)
    if not crypto.verify_signature(key_der(public_key_b64), message, signature):
        raise NanoMoniError(Code.invalid_signature, f"invalid signature: {field} does not verify")


def _check_amounts(terms: ChannelTerms, name: str, index: int) -> int:
    owed = index if terms.unit_value is None else index * terms.unit_value
    if owed < 1:
        raise NanoMoniError(Code.invalid_amount, f"owed must be at least 1, got {owed}")
    if terms.max_index is not None and index > terms.max_index:
        raise NanoMoniError(
            Code.exceeds_max, f"{name} {index} exceeds the channel maximum {terms.max_index}"
        )
    if owed > terms.amount:
        raise NanoMoniError(
            Code.exceeds_amount, f"owed {owed} exceeds the channel amount {terms.amount}"
        )
    return owed


def _proof_digest(terms: ChannelTerms, index: int, proof: bytes) -> bytes:
    """Identifies what was settled, signatures excluded: a retry with fresh signatures matches."""
    content = {
        "mode": terms.mode.value,
        "channel_id": terms.channel_id,
        "index": index,
        "proof_b64": b64encode(proof),
    }
    return crypto.digest(canonical_json(content), "sha256")


def check_settlement(
    mode: Mode,
    terms: ChannelTerms,
    path_channel_id: str,
    body: Settlement,
    *,
    now: str,
) -> Closure:
    """Issuer side: the closure a valid settlement asks for (balances left for the store)."""
    require_mode(mode, terms.mode, "settlement")
    expected = (
        wire.SignatureSettlement
        if mode == Mode.signature
        else wire.PaywordSettlement
        if mode == Mode.payword
        else wire.PaytreeSettlement
    )
    if not isinstance(body, expected):
        raise NanoMoniError(
            Code.mode_mismatch, f"a {type(body).__name__} is not a {mode.value} settlement"
        )
    body_channel_id = body.channel_id if isinstance(body, wire.SignatureSettlement) else None
    for claimed in (path_channel_id, body_channel_id):
        if claimed is not None and claimed != terms.channel_id:
            raise NanoMoniError(
                Code.id_mismatch,
                f"channel id {claimed} differs from the settled channel {terms.channel_id}",
            )
    if isinstance(body, wire.SignatureSettlement):
        owed = _check_amounts(terms, "cumulative_owed_amount", body.cumulative_owed_amount)
        message = signature_message(terms.channel_id, owed)
        _check_signature(
            terms.client_public_key_der_b64,
            message,
            body.client_close_signature_b64,
            "client_close_signature_b64",
        )
        _check_signature(
            terms.vendor_public_key_der_b64,
            message,
            body.vendor_close_signature_b64,
            "vendor_close_signature_b64",
        )
        return Closure(
            owed=owed,
            proof_digest=_proof_digest(terms, owed, b""),
            client_balance=0,
            vendor_balance=0,
            closed_at=now,
            close_payload_b64=b64encode(message),
            client_close_signature_b64=body.client_close_signature_b64,
            vendor_close_signature_b64=body.vendor_close_signature_b64,
        )

    if body.vendor_public_key_der_b64 != terms.vendor_public_key_der_b64:
        raise NanoMoniError(
            Code.invalid_signature,
            "invalid signature: vendor_public_key_der_b64 is not this channel's vendor key",
        )
    assert terms.root is not None
    if isinstance(body, wire.PaywordSettlement):
        owed = _check_amounts(terms, "k", body.k)
        token = b64decode(body.token_b64, HASH_LEN, field="token_b64")
        _check_signature(
            terms.vendor_public_key_der_b64,
            _payword_message(terms.channel_id, body.k, body.token_b64),
            body.vendor_signature_b64,
            "vendor_signature_b64",
        )
        if not crypto.verify_payword(token, body.k, terms.root, terms.hash_alg):
            raise NanoMoniError(
                Code.invalid_proof, "invalid token: hash chain mismatch with the channel root"
            )
        return Closure(
            owed=owed,
            proof_digest=_proof_digest(terms, body.k, token),
            client_balance=0,
            vendor_balance=0,
            closed_at=now,
        )

    assert mode in TREE_MODES
    owed = _check_amounts(terms, "i", body.i)
    depth = depth_of(terms)
    if len(body.siblings_b64) != depth:
        raise NanoMoniError(
            Code.invalid_proof,
            f"invalid proof: {len(body.siblings_b64)} siblings, exactly {depth} expected",
        )
    leaf = b64decode(body.leaf_b64, HASH_LEN, field="leaf_b64")
    siblings = decode_siblings(body.siblings_b64)
    _check_signature(
        terms.vendor_public_key_der_b64,
        _paytree_message(terms.channel_id, body.i, body.leaf_b64, body.siblings_b64),
        body.vendor_signature_b64,
        "vendor_signature_b64",
    )
    if not crypto.verify_merkle(leaf, body.i, siblings, terms.root, depth, terms.hash_alg):
        raise NanoMoniError(
            Code.invalid_proof, "invalid proof: the Merkle path does not match the commitment"
        )
    return Closure(
        owed=owed,
        proof_digest=_proof_digest(terms, body.i, leaf + b"".join(siblings)),
        client_balance=0,
        vendor_balance=0,
        closed_at=now,
    )
