"""Signature cases shared by the signature targets: a key, a message and a
signature that is valid, slightly wrong, or arbitrary bytes."""

from __future__ import annotations

from functools import cache

import reference
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from data import FuzzInput

ORDERS = {
    "p256": 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    "secp256k1": 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141,
}


@cache
def keys() -> dict[str, reference.PrivateKey]:
    return reference.fixed_keys()


@cache
def public_der(kind: str) -> bytes:
    return reference.spki(keys()[kind].public_key())


def mutate(signature: bytes, inp: FuzzInput, kind: str) -> bytes:
    """The signature with one small change chosen by the input (or none)."""
    op = inp.below(8)
    if op == 0 or not signature:
        return signature
    at = inp.below(len(signature))
    if op == 1:
        return signature[:at] + bytes([signature[at] ^ (1 << inp.below(8))]) + signature[at + 1 :]
    if op == 2:
        return signature[:at]
    if op == 3:
        return signature + inp.blob(8)
    if op == 4:
        return signature[:at] + inp.blob(4) + signature[at:]
    if op == 5 and kind in ORDERS:  # the other valid ECDSA signature: s -> n - s
        r, s = decode_dss_signature(signature)
        return encode_dss_signature(r, ORDERS[kind] - s)
    if op == 6 and kind in ORDERS:  # r or s pushed out of range
        r, s = decode_dss_signature(signature)
        return (
            encode_dss_signature(r + ORDERS[kind], s) if inp.flag() else encode_dss_signature(r, 0)
        )
    return signature[:at] + bytes([inp.uint(1)]) + signature[at + 1 :]


def signature_case(inp: FuzzInput) -> tuple[bytes, bytes, bytes, bool]:
    """(public key DER, message, signature, whether the key is one of the fixed keys)."""
    mode = inp.uint(1)
    message = inp.blob(255)
    if mode >= 0xE0:  # a key made of the input's bytes (seeded with real encodings)
        return inp.blob(200), message, inp.blob(100), False
    kind = reference.KINDS[mode % 3]
    # Now and then signed by another kind's key: a signature for the wrong scheme.
    signer = kind if mode & 0x10 == 0 else reference.KINDS[(mode + 1) % 3]
    if mode & 0x08:
        signature = inp.blob(80)
    else:
        signature = mutate(reference.sign(keys()[signer], message), inp, signer)
    return public_der(kind), message, signature, True
