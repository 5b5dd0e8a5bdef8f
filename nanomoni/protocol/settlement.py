"""Settlement (SPEC §4.5, §5.6): the vendor builds it, the issuer checks it.

The mode's rules build and verify the proof; here is what every mode shares:
mode binding, the path's channel id, and the closure the store records.
"""

from __future__ import annotations

from nanomoni import crypto
from nanomoni.encoding import b64encode, canonical_json
from nanomoni.errors import Code, NanoMoniError
from nanomoni.protocol.messages import Settlement
from nanomoni.protocol.model import ChannelTerms, Closure
from nanomoni.protocol.modes import AnyRules
from nanomoni.protocol.payments import require_mode


def proof_digest(terms: ChannelTerms, index: int, proof: bytes) -> bytes:
    """Identifies what was settled, signatures excluded: a retry with fresh signatures matches."""
    content = {
        "mode": terms.mode.value,
        "channel_id": terms.channel_id,
        "index": index,
        "proof_b64": b64encode(proof),
    }
    return crypto.digest(canonical_json(content), "sha256")


def is_final(body: Settlement) -> bool:
    """A settlement closes the channel unless it says `final: false` (a checkpoint)."""
    return body.final is not False


def check_settlement(
    rules: AnyRules,
    terms: ChannelTerms,
    path_channel_id: str,
    body: Settlement,
    *,
    now: str,
) -> Closure:
    """Issuer side: the closure a valid settlement asks for (balances left for the store)."""
    require_mode(rules, terms, "settlement")
    if not isinstance(body, rules.settlement_type):
        raise NanoMoniError(
            Code.mode_mismatch, f"a {type(body).__name__} is not a {rules.mode.value} settlement"
        )
    if path_channel_id != terms.channel_id:
        raise NanoMoniError(
            Code.id_mismatch,
            f"channel id {path_channel_id} differs from the settled channel {terms.channel_id}",
        )
    settled = rules.check_settlement(terms, body)
    return Closure(
        owed=rules.owed(terms, settled.index),
        proof_digest=proof_digest(terms, settled.index, settled.proof),
        client_balance=0,
        vendor_balance=0,
        closed_at=now,
        close_payload_b64=settled.close_payload_b64,
        client_close_signature_b64=settled.client_close_signature_b64,
        vendor_close_signature_b64=settled.vendor_close_signature_b64,
    )
