"""`payword` mode (SPEC §5.2): token k of a hash chain, H^k(token) = root."""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from nanomoni import crypto
from nanomoni.encoding import b64encode
from nanomoni.protocol.messages import PaywordPayment, PaywordSettlement
from nanomoni.protocol.model import ChannelTerms, Mode, PaymentState, VendorView
from nanomoni.protocol.modes.base import (
    HASH_LEN,
    CommitmentMembers,
    ModeRules,
    SettledProof,
    Signer,
    Verified,
    check_signature,
    check_vendor_key,
    invalid_proof,
    settlement_message,
)

# Up to 2^16 kept words (2 MiB): a token then costs at most 256 hashes even for a
# 2^24 chain, instead of 16k with the core's default.
MAX_CHECKPOINTS = 1 << 16


def _message(channel_id: str, k: int, token: bytes, final: bool | None) -> bytes:
    return settlement_message(channel_id, {"k": k, "token_b64": b64encode(token)}, final)


class PaywordRules(ModeRules[PaywordPayment, PaywordSettlement]):
    mode = Mode.payword
    payment_type = PaywordPayment
    settlement_type = PaywordSettlement
    index_name = "k"
    response_index = "k"
    members = CommitmentMembers("payword_root_b64", "payword_unit_value", "payword_max_k")
    payment_cost = 1

    def index(self, payment: PaywordPayment) -> int:
        return payment.k

    def hash_walk(self, terms: ChannelTerms, accepted: int, payment: PaywordPayment) -> int:
        return payment.k - accepted

    def is_replay(
        self, terms: ChannelTerms, stored: PaymentState, payment: PaywordPayment
    ) -> bool:
        return payment.token == stored.proof

    def _check(
        self, terms: ChannelTerms, view: VendorView, payment: PaywordPayment
    ) -> tuple[bytes, int, bytes, str]:
        """(token, steps, anchor, hash suite): H^steps(token) must equal the anchor."""
        assert terms.root is not None
        stored = view.state
        anchor, previous = (terms.root, 0) if stored is None else (stored.proof, stored.index)
        return payment.token, payment.k - previous, anchor, terms.hash_alg

    def verify(self, terms: ChannelTerms, view: VendorView, payment: PaywordPayment) -> Verified:
        if not crypto.verify_payword(*self._check(terms, view, payment)):
            raise invalid_proof("invalid token: hash chain mismatch with the accepted token")
        return Verified(proof=payment.token, nodes={})

    def presume(
        self, terms: ChannelTerms, view: VendorView, payment: PaywordPayment, checks: list[Any]
    ) -> Verified:
        checks.append(self._check(terms, view, payment))
        return Verified(proof=payment.token, nodes={})

    def run_checks(self, checks: Sequence[Any]) -> list[bool]:
        """Every walk of one hash suite in one native call."""
        by_alg: dict[str, list[int]] = defaultdict(list)
        for n, (_, _, _, alg) in enumerate(checks):
            by_alg[alg].append(n)
        results = [False] * len(checks)
        for alg, positions in by_alg.items():
            triples = [checks[n][:3] for n in positions]
            for n, ok in zip(positions, crypto.verify_payword_batch(triples, alg), strict=True):
                results[n] = ok
        return results

    def check_cost(self, checks: Sequence[Any]) -> int:
        return sum(check[1] for check in checks)

    def build_settlement(
        self,
        terms: ChannelTerms,
        state: PaymentState,
        nodes: Sequence[bytes | None],
        vendor_key: Signer,
        *,
        final: bool | None = None,
    ) -> PaywordSettlement:
        message = _message(terms.channel_id, state.index, state.proof, final)
        return PaywordSettlement(
            vendor_key=terms.vendor_public_key_der_b64,
            k=state.index,
            token=state.proof,
            vendor_signature=vendor_key.sign(message),
            final=final,
        )

    def check_settlement(self, terms: ChannelTerms, body: PaywordSettlement) -> SettledProof:
        check_vendor_key(terms, body.vendor_key)
        assert terms.root is not None
        self.check_index(terms, body.k)
        check_signature(
            terms.vendor_public_key_der_b64,
            _message(terms.channel_id, body.k, body.token, body.final),
            body.vendor_signature,
            "vendor_signature_b64",
        )
        if not crypto.verify_payword(body.token, body.k, terms.root, terms.hash_alg):
            raise invalid_proof("invalid token: hash chain mismatch with the channel root")
        return SettledProof(index=body.k, proof=body.token)

    def create_payer(
        self, key: Signer, *, max_index: int, hash_alg: str, seed: bytes | None = None
    ) -> PaywordPayer:
        checkpoints = min(MAX_CHECKPOINTS, max_index + 1)
        seed = os.urandom(HASH_LEN) if seed is None else seed
        return PaywordPayer(crypto.PaywordChain(seed, max_index, hash_alg, checkpoints))


class PaywordPayer:
    """Token k = w_(max_k − k) of a hash chain kept as checkpoints."""

    def __init__(self, chain: crypto.PaywordChain, channel_id: str = "") -> None:
        self.chain = chain
        self.max_index = chain.max_k
        self.channel_id = channel_id
        self.last = 0

    @property
    def root(self) -> bytes:
        return self.chain.root

    def payment(self, index: int) -> PaywordPayment:
        return PaywordPayment(k=index, token=self.chain.token(index), channel_id=self.channel_id)

    def payments(self, indices: Sequence[int]) -> list[PaywordPayment]:
        built = [self.payment(index) for index in indices]
        for index in indices:
            self.accepted(index)
        return built

    def accepted(self, index: int) -> None:
        self.last = max(self.last, index)
