"""`signature` mode (SPEC §5.1): each payment is the client's signature over the
cumulative amount it owes; settlement carries that signature and the vendor's."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from nanomoni import crypto
from nanomoni.encoding import b64encode, canonical_json, is_channel_id, public_key_der
from nanomoni.errors import Code, NanoMoniError
from nanomoni.protocol.messages import SignaturePayment, SignatureSettlement
from nanomoni.protocol.model import ChannelTerms, Mode, PaymentState, VendorView
from nanomoni.protocol.modes.base import (
    ModeRules,
    SettledProof,
    Signer,
    Verified,
    check_signature,
)

# One signature verification costs about as much as this many hash steps (25-60 µs).
SIGNATURE_HASHES = 1000


def amount_message(channel_id: str, amount: int) -> bytes:
    """What the client signs for a payment and both parties sign at closure (§4.5, §5.1)."""
    if is_channel_id(channel_id) and type(amount) is int and amount >= 0:
        # The canonical JSON itself (a channel id needs no escaping), 10x cheaper.
        return b'{"channel_id":"%s","cumulative_owed_amount":%d}' % (channel_id.encode(), amount)
    return canonical_json({"channel_id": channel_id, "cumulative_owed_amount": amount})


def vendor_message(channel_id: str, amount: int, final: bool | None) -> bytes:
    """What the vendor signs at settlement: the amount message, plus `final` when the body
    carries it (§4.5 [v1.1]); the client's signature stays over the amount message."""
    members = {"channel_id": channel_id, "cumulative_owed_amount": amount, "final": final}
    return canonical_json(members)


class SignatureRules(ModeRules[SignaturePayment, SignatureSettlement]):
    mode = Mode.signature
    payment_type = SignaturePayment
    settlement_type = SignatureSettlement
    index_name = "cumulative_owed_amount"
    response_index = None  # the answer's cumulative_owed_amount is the index
    members = None
    payment_cost = 50

    def index(self, payment: SignaturePayment) -> int:
        return payment.amount

    def _check(self, terms: ChannelTerms, payment: SignaturePayment) -> tuple[bytes, bytes, bytes]:
        """(client key DER, signed message, signature): what verifying the payment checks."""
        message = amount_message(terms.channel_id, payment.amount)
        return public_key_der(terms.client_public_key_der_b64), message, payment.signature

    def _verify_client(self, terms: ChannelTerms, payment: SignaturePayment) -> None:
        if not crypto.verify_signature(*self._check(terms, payment)):
            raise NanoMoniError(
                Code.invalid_signature,
                "invalid signature: signature_b64 is not the client's signature over the "
                "channel id and cumulative amount",
            )

    def is_replay(
        self, terms: ChannelTerms, stored: PaymentState, payment: SignaturePayment
    ) -> bool:
        # Signature bytes are never compared (ECDSA has two valid forms): a valid
        # signature over the same amount is the same payment.
        self._verify_client(terms, payment)
        return True

    def verify(
        self, terms: ChannelTerms, view: VendorView, payment: SignaturePayment
    ) -> Verified:
        self._verify_client(terms, payment)
        return Verified(proof=payment.signature, nodes={})

    def presume(
        self, terms: ChannelTerms, view: VendorView, payment: SignaturePayment, checks: list[Any]
    ) -> Verified:
        checks.append(self._check(terms, payment))
        return Verified(proof=payment.signature, nodes={})

    def presume_replay(
        self,
        terms: ChannelTerms,
        stored: PaymentState,
        payment: SignaturePayment,
        checks: list[Any],
    ) -> bool:
        checks.append(self._check(terms, payment))
        return True

    def run_checks(self, checks: Sequence[Any]) -> list[bool]:
        return crypto.verify_signatures(checks)  # all of a batch in one native call

    def check_cost(self, checks: Sequence[Any]) -> int:
        return SIGNATURE_HASHES * len(checks)

    def build_settlement(
        self,
        terms: ChannelTerms,
        state: PaymentState,
        nodes: Sequence[bytes | None],
        vendor_key: Signer,
        *,
        final: bool | None = None,
    ) -> SignatureSettlement:
        message = vendor_message(terms.channel_id, state.owed, final)
        return SignatureSettlement(
            channel_id=terms.channel_id,
            amount=state.owed,
            client_signature=state.proof,
            vendor_signature=vendor_key.sign(message),
            final=final,
        )

    def check_settlement(self, terms: ChannelTerms, body: SignatureSettlement) -> SettledProof:
        if body.channel_id != terms.channel_id:
            raise NanoMoniError(
                Code.id_mismatch,
                f"channel id {body.channel_id} differs from the settled channel {terms.channel_id}",
            )
        owed = self.check_index(terms, body.amount)
        message = amount_message(terms.channel_id, owed)
        check_signature(
            terms.client_public_key_der_b64,
            message,
            body.client_signature,
            "client_close_signature_b64",
        )
        check_signature(
            terms.vendor_public_key_der_b64,
            vendor_message(terms.channel_id, owed, body.final),
            body.vendor_signature,
            "vendor_close_signature_b64",
        )
        return SettledProof(
            index=owed,
            proof=b"",
            close_payload_b64=b64encode(message),
            client_close_signature_b64=b64encode(body.client_signature),
            vendor_close_signature_b64=b64encode(body.vendor_signature),
        )

    def create_payer(
        self, key: Signer, *, max_index: int, hash_alg: str, seed: bytes | None = None
    ) -> SignaturePayer:
        return SignaturePayer(key, max_index)


class SignaturePayer:
    """Index = cumulative owed amount; each payment is a signature over it."""

    root = None

    def __init__(self, key: Signer, max_index: int, channel_id: str = "") -> None:
        self.key = key
        self.max_index = max_index  # the channel amount
        self.channel_id = channel_id
        self.last = 0

    def payment(self, index: int) -> SignaturePayment:
        signature = self.key.sign(amount_message(self.channel_id, index))
        return SignaturePayment(channel_id=self.channel_id, amount=index, signature=signature)

    def payments(self, indices: Sequence[int]) -> list[SignaturePayment]:
        """Many payments signed in one native batch (used to pre-compute load)."""
        messages = [amount_message(self.channel_id, index) for index in indices]
        signatures = self.key.sign_many(messages)
        for index in indices:
            self.accepted(index)
        return [
            SignaturePayment(channel_id=self.channel_id, amount=index, signature=signature)
            for index, signature in zip(indices, signatures, strict=True)
        ]

    def accepted(self, index: int) -> None:
        self.last = max(self.last, index)
