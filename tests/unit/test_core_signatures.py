"""The native core's signatures, checked against `cryptography` (OpenSSL) as the reference."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa, x25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from nanomoni import _core, crypto

# ASan makes everything slower; keep the generated cases fewer there.
EXAMPLES = 15 if os.environ.get("NANOMONI_SANITIZED") == "1" else 60

ORDERS = {
    "p256": 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    "secp256k1": 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141,
}
ECDSA_KINDS = ("p256", "secp256k1")

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def reference_key(kind: str) -> PrivateKey:
    if kind == "p256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "secp256k1":
        return ec.generate_private_key(ec.SECP256K1())
    return ed25519.Ed25519PrivateKey.generate()


def spki(key: PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def pkcs8(key: PrivateKey | rsa.RSAPrivateKey | ed448.Ed448PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def reference_sign(key: PrivateKey, message: bytes) -> bytes:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(message)
    return key.sign(message, ec.ECDSA(hashes.SHA256()))


def reference_verify(public_der: bytes, message: bytes, signature: bytes) -> bool:
    try:
        public = serialization.load_der_public_key(public_der)
        if isinstance(public, ed25519.Ed25519PublicKey):
            public.verify(signature, message)
        else:
            assert isinstance(public, ec.EllipticCurvePublicKey)
            public.verify(signature, message, ec.ECDSA(hashes.SHA256()))
    except Exception:
        return False
    return True


def flip_s(kind: str, signature: bytes) -> bytes:
    """The other valid ECDSA signature for the same message: s -> n - s."""
    r, s = decode_dss_signature(signature)
    return encode_dss_signature(r, ORDERS[kind] - s)


def verify(public_der: bytes, message: bytes, signature: bytes) -> bool:
    return crypto.verify_signature(public_der, message, signature)


@pytest.fixture(scope="module")
def keys() -> dict[str, PrivateKey]:
    return {kind: reference_key(kind) for kind in crypto.KEY_KINDS}


@pytest.fixture(scope="module")
def core_keys() -> dict[str, crypto.SigningKey]:
    return {kind: crypto.SigningKey.generate(kind) for kind in crypto.KEY_KINDS}


# --- differential against cryptography ------------------------------------------------


@pytest.mark.parametrize("kind", crypto.KEY_KINDS)
@settings(max_examples=EXAMPLES, deadline=None)
@given(message=st.binary(max_size=300))
def test_reference_signatures_verify_in_core(
    keys: dict[str, PrivateKey], kind: str, message: bytes
) -> None:
    key = keys[kind]
    signature = reference_sign(key, message)
    assert verify(spki(key), message, signature) is True
    assert verify(spki(key), message + b"\x00", signature) is False


@pytest.mark.parametrize("kind", crypto.KEY_KINDS)
@settings(max_examples=EXAMPLES, deadline=None)
@given(message=st.binary(max_size=300))
def test_core_signatures_verify_in_reference(
    core_keys: dict[str, crypto.SigningKey], kind: str, message: bytes
) -> None:
    key = core_keys[kind]
    signature = key.sign(message)
    assert reference_verify(key.public_key_der, message, signature) is True
    assert verify(key.public_key_der, message, signature) is True


@settings(max_examples=EXAMPLES, deadline=None)
@given(message=st.binary(max_size=300))
def test_ed25519_signatures_equal_reference(keys: dict[str, PrivateKey], message: bytes) -> None:
    """Ed25519 is deterministic, so both implementations must produce the same bytes."""
    key = keys["ed25519"]
    assert crypto.SigningKey(pkcs8(key)).sign(message) == reference_sign(key, message)


@pytest.mark.parametrize("kind", ECDSA_KINDS)
@settings(max_examples=EXAMPLES, deadline=None)
@given(message=st.binary(max_size=200))
def test_high_and_low_s_both_verify(keys: dict[str, PrivateKey], kind: str, message: bytes) -> None:
    key = keys[kind]
    signature = reference_sign(key, message)
    flipped = flip_s(kind, signature)
    assert flipped != signature
    assert reference_verify(spki(key), message, flipped) is True
    assert verify(spki(key), message, signature) is True
    assert verify(spki(key), message, flipped) is True
    assert verify(spki(key), message + b"!", flipped) is False


@pytest.mark.parametrize("kind", ECDSA_KINDS)
def test_core_ecdsa_signatures_are_low_s(
    core_keys: dict[str, crypto.SigningKey], kind: str
) -> None:
    signatures = core_keys[kind].sign_many([b"low-s %d" % i for i in range(64)], threads=1)
    for signature in signatures:
        _, s = decode_dss_signature(signature)
        assert 0 < s <= ORDERS[kind] // 2


# --- tampering and malformed input ---------------------------------------------------------


@pytest.mark.parametrize("kind", crypto.KEY_KINDS)
def test_tampered_message_signature_and_key_fail(keys: dict[str, PrivateKey], kind: str) -> None:
    key = keys[kind]
    message = b"cumulative_owed_amount=1000"
    signature = reference_sign(key, message)
    public = spki(key)
    assert verify(public, message, signature) is True

    assert verify(public, b"cumulative_owed_amount=1001", signature) is False
    for i in range(len(signature)):
        tampered = bytearray(signature)
        tampered[i] ^= 0x01
        assert verify(public, message, bytes(tampered)) is False, f"byte {i} flipped"
    # Another key of the same kind, and this key with one byte of the point changed.
    assert verify(spki(reference_key(kind)), message, signature) is False
    bent = bytearray(public)
    bent[-1] ^= 0x01
    assert verify(bytes(bent), message, signature) is False


@pytest.mark.parametrize("kind", crypto.KEY_KINDS)
def test_truncated_and_extended_keys_are_rejected(keys: dict[str, PrivateKey], kind: str) -> None:
    key = keys[kind]
    public = spki(key)
    signature = reference_sign(key, b"m")
    for cut in range(len(public)):
        assert crypto.public_key_kind(public[:cut]) is None
        assert verify(public[:cut], b"m", signature) is False
    assert crypto.public_key_kind(public + b"\x00") is None
    assert verify(public + b"\x00", b"m", signature) is False


@settings(max_examples=EXAMPLES * 3, deadline=None)
@given(
    garbage=st.binary(max_size=200),
    message=st.binary(max_size=40),
    signature=st.binary(max_size=80),
)
def test_garbage_never_verifies(garbage: bytes, message: bytes, signature: bytes) -> None:
    assert crypto.public_key_kind(garbage) is None
    assert verify(garbage, message, signature) is False


@pytest.mark.parametrize("kind", crypto.KEY_KINDS)
@settings(max_examples=EXAMPLES, deadline=None)
@given(signature=st.binary(max_size=100))
def test_garbage_signatures_never_verify(
    keys: dict[str, PrivateKey], kind: str, signature: bytes
) -> None:
    assert verify(spki(keys[kind]), b"message", signature) is False


def test_signature_of_another_scheme_fails(keys: dict[str, PrivateKey]) -> None:
    message = b"same message"
    p256, k1, ed = keys["p256"], keys["secp256k1"], keys["ed25519"]
    assert verify(spki(p256), message, reference_sign(k1, message)) is False
    assert verify(spki(k1), message, reference_sign(p256, message)) is False
    assert verify(spki(ed), message, reference_sign(p256, message)) is False
    assert verify(spki(p256), message, reference_sign(ed, message)) is False
    assert verify(spki(k1), message, reference_sign(ed, message)) is False


@pytest.mark.parametrize("kind", ECDSA_KINDS)
def test_non_canonical_der_is_rejected(keys: dict[str, PrivateKey], kind: str) -> None:
    """Only the canonical DER form verifies (as in OpenSSL), so encodings cannot be varied."""
    key = keys[kind]
    r, s = decode_dss_signature(reference_sign(key, b"m"))

    def integer(value: int, pad: bytes = b"") -> bytes:
        body = pad + value.to_bytes((value.bit_length() + 8) // 8, "big")
        return b"\x02" + bytes([len(body)]) + body

    padded = integer(r, b"\x00") + integer(s)
    assert verify(spki(key), b"m", b"\x30" + bytes([len(padded)]) + padded) is False
    plain = integer(r) + integer(s)
    assert verify(spki(key), b"m", b"\x30" + bytes([len(plain)]) + plain) is True
    long_length = b"\x30\x81" + bytes([len(plain)]) + plain
    assert verify(spki(key), b"m", long_length) is False
    assert verify(spki(key), b"m", b"\x30" + bytes([len(plain)]) + plain + b"\x00") is False
    assert verify(spki(key), b"m", encode_dss_signature(0, s)) is False
    assert verify(spki(key), b"m", encode_dss_signature(r, 0)) is False
    assert verify(spki(key), b"m", encode_dss_signature(r, ORDERS[kind] + s)) is False


def test_empty_and_wrong_typed_inputs_verify_false(keys: dict[str, PrivateKey]) -> None:
    key = keys["p256"]
    public, signature = spki(key), reference_sign(key, b"")
    assert verify(public, b"", signature) is True
    items: list[object] = [
        (b"", b"", b""),
        (public, b"", b""),
        (b"", b"", signature),
        None,
        42,
        (public, b""),
        (public, b"", signature, b""),
        ("text", b"", signature),
        (public, "", signature),
        (public, b"", None),
        (public, None, signature),
        b"abc",
    ]
    assert crypto.verify_signatures(items, threads=1) == [False] * len(items)  # type: ignore[arg-type]
    assert crypto.verify_signatures([]) == []
    assert crypto.public_key_kind(b"") is None
    assert _core.public_key_kind(None) == -1  # type: ignore[arg-type]


def test_bytes_like_inputs_are_accepted(keys: dict[str, PrivateKey]) -> None:
    key = keys["ed25519"]
    public, signature = spki(key), reference_sign(key, b"hello")
    items = [(bytearray(public), memoryview(b"hello"), bytearray(signature))]
    assert crypto.verify_signatures(items) == [True]  # type: ignore[arg-type]
    assert crypto.verify_signatures([[public, b"hello", signature]]) == [True]  # type: ignore[list-item]


@pytest.mark.parametrize(
    "make_key",
    [
        lambda: ec.generate_private_key(ec.SECP384R1()),
        lambda: rsa.generate_private_key(public_exponent=65537, key_size=1024),
        ed448.Ed448PrivateKey.generate,
        x25519.X25519PrivateKey.generate,
    ],
    ids=["p384", "rsa", "ed448", "x25519"],
)
def test_unsupported_key_types(make_key: Callable[[], object]) -> None:
    key = make_key()
    public = key.public_key().public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert crypto.public_key_kind(public) is None
    assert verify(public, b"m", b"\x00" * 64) is False
    with pytest.raises(ValueError, match="unsupported private key type"):
        crypto.SigningKey(pkcs8(key))  # type: ignore[arg-type]


# --- batches and threads ----------------------------------------------------------------


def mixed_batch(keys: dict[str, PrivateKey], n: int) -> list[tuple[bytes, bytes, bytes]]:
    """Valid, tampered and malformed items of every kind, interleaved."""
    items: list[tuple[bytes, bytes, bytes]] = []
    kinds = list(keys)
    for i in range(n):
        kind = kinds[i % len(kinds)]
        key = keys[kind]
        message = b"payment %d" % i
        signature = reference_sign(key, message)
        match i % 6:
            case 0 | 1:
                items.append((spki(key), message, signature))
            case 2:
                items.append((spki(key), message + b"x", signature))
            case 3:
                good = kind in ECDSA_KINDS
                items.append((spki(key), message, flip_s(kind, signature) if good else signature))
            case 4:
                items.append((spki(key)[:-3], message, signature))
            case _:
                items.append((spki(key), message, signature[:-1]))
    return items


@pytest.mark.parametrize("n", [1, 7, 63, 64, 200])
def test_batch_equals_single_results(keys: dict[str, PrivateKey], n: int) -> None:
    items = mixed_batch(keys, n)
    singles = [verify(*item) for item in items]
    assert singles == [reference_verify(*item) for item in items]
    for threads in (0, 1, 2, 3, 64, 1000):
        assert crypto.verify_signatures(items, threads=threads) == singles
    assert any(singles) and (n < 3 or not all(singles))


def test_negative_threads_is_an_error(core_keys: dict[str, crypto.SigningKey]) -> None:
    with pytest.raises(ValueError, match="threads"):
        crypto.verify_signatures([], threads=-1)
    with pytest.raises(ValueError, match="threads"):
        core_keys["p256"].sign_many([b"x"], threads=-1)


# --- the key cache ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", crypto.KEY_KINDS)
def test_one_key_many_times(keys: dict[str, PrivateKey], kind: str) -> None:
    key, other = keys[kind], reference_key(kind)
    messages = [b"amount %d" % i for i in range(300)]
    signatures = [reference_sign(key, m) for m in messages]
    items = [(spki(key), m, s) for m, s in zip(messages, signatures, strict=True)]
    assert crypto.verify_signatures(items, threads=2) == [True] * len(items)
    # Alternating with another key of the same kind must not mix the cached keys up.
    alternating = [(spki(other) if i % 2 else spki(key), m, s) for i, (_, m, s) in enumerate(items)]
    assert crypto.verify_signatures(alternating, threads=2) == [i % 2 == 0 for i in range(300)]


def test_more_keys_than_the_cache_holds() -> None:
    count = _core.KEY_CACHE_SLOTS + 500
    keys = [ed25519.Ed25519PrivateKey.generate() for _ in range(count)]
    items = [(spki(key), b"m %d" % i, key.sign(b"m %d" % i)) for i, key in enumerate(keys)]
    assert crypto.verify_signatures(items, threads=2) == [True] * count
    # Again (now evicted or cached, depending on the slot), and with each key swapped
    # for its neighbour's, which must fail.
    assert crypto.verify_signatures(items, threads=1) == [True] * count
    swapped = [(items[i - 1][0], m, s) for i, (_, m, s) in enumerate(items)]
    assert crypto.verify_signatures(swapped, threads=2) == [False] * count


def test_concurrent_batches_share_the_cache(keys: dict[str, PrivateKey]) -> None:
    """Python threads running batches at once, with the cache churning under them."""
    churn = [ed25519.Ed25519PrivateKey.generate() for _ in range(300)]
    churn_items = [(spki(k), b"c", k.sign(b"c")) for k in churn]
    items = mixed_batch(keys, 90)
    expected = [verify(*item) for item in items]
    failures: list[str] = []

    def worker(seed: int) -> None:
        for round_ in range(4):
            batch = items if (seed + round_) % 2 else churn_items
            want = expected if batch is items else [True] * len(churn_items)
            if crypto.verify_signatures(batch, threads=2) != want:
                failures.append(f"worker {seed} round {round_}")

    workers = [threading.Thread(target=worker, args=(seed,)) for seed in range(4)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    assert failures == []


# --- signing keys -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", crypto.KEY_KINDS)
def test_pkcs8_round_trip_and_public_key(keys: dict[str, PrivateKey], kind: str) -> None:
    der = pkcs8(keys[kind])
    key = crypto.SigningKey(der)
    assert key.kind == kind
    assert key.private_key_der == der
    assert key.public_key_der == spki(keys[kind])
    assert crypto.public_key_kind(key.public_key_der) == kind
    assert crypto.SigningKey.from_pem(key.to_pem()).public_key_der == key.public_key_der


@pytest.mark.parametrize("kind", crypto.KEY_KINDS)
def test_generated_keys_load_in_reference(kind: str) -> None:
    first, second = crypto.SigningKey.generate(kind), crypto.SigningKey.generate(kind)
    assert first.public_key_der != second.public_key_der
    loaded = serialization.load_der_private_key(first.private_key_der, password=None)
    assert spki(loaded) == first.public_key_der  # type: ignore[arg-type]
    signature = first.sign(b"generated")
    assert reference_verify(first.public_key_der, b"generated", signature) is True


def test_invalid_private_keys_raise_value_error(keys: dict[str, PrivateKey]) -> None:
    der = pkcs8(keys["p256"])
    bad_inputs = [b"", b"\x30\x00", der[:-1], der + b"\x00", spki(keys["p256"]), os.urandom(120)]
    for bad in bad_inputs:
        with pytest.raises(ValueError, match="private key"):
            crypto.SigningKey(bad)
    with pytest.raises(TypeError):
        _core.SigningKey("not bytes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown key kind"):
        crypto.SigningKey.generate("rsa")
    for kind in (-1, 3):
        with pytest.raises(ValueError, match="unknown key kind"):
            _core.generate_private_key(kind)


@pytest.mark.parametrize("kind", ECDSA_KINDS)
def test_private_key_with_another_keys_public_key_is_refused(kind: str) -> None:
    """PKCS#8 EC keys carry their public key; one that does not match the private
    scalar would make us hand out a key our signatures fail under (found by fuzzing)."""
    key, other = reference_key(kind), reference_key(kind)
    der = pkcs8(key)  # type: ignore[arg-type]

    def point(k: PrivateKey) -> bytes:
        return k.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )

    assert der.count(point(key)) == 1
    with pytest.raises(ValueError, match="private key"):
        crypto.SigningKey(der.replace(point(key), point(other)))
    assert crypto.SigningKey(der).public_key_der == spki(key)


@pytest.mark.parametrize("kind", crypto.KEY_KINDS)
def test_sign_many_matches_sign(core_keys: dict[str, crypto.SigningKey], kind: str) -> None:
    key = core_keys[kind]
    messages = [b"pre-signed %d" % i for i in range(130)] + [b""]
    for threads in (0, 1, 2):
        signatures = key.sign_many(messages, threads=threads)
        assert len(signatures) == len(messages)
        items = [(key.public_key_der, m, s) for m, s in zip(messages, signatures, strict=True)]
        assert crypto.verify_signatures(items, threads=2) == [True] * len(messages)
    if kind == "ed25519":
        assert key.sign_many(messages) == [key.sign(m) for m in messages]
    assert key.sign_many([]) == []
    with pytest.raises(TypeError):
        key.sign_many([b"ok", "not bytes"])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        key.sign(None)  # type: ignore[arg-type]


# --- one encoding per key -------------------------------------------------------------------


def compressed_spki(key: ec.EllipticCurvePrivateKey) -> bytes:
    """The SPKI of key with its point compressed (cryptography only writes it uncompressed)."""
    uncompressed = spki(key)
    point = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
    )
    body = uncompressed[2:-68] + bytes([0x03, len(point) + 1, 0]) + point  # AlgorithmIdentifier
    return bytes([0x30, len(body)]) + body


@pytest.mark.parametrize("kind", ECDSA_KINDS)
def test_compressed_ec_keys_verify(keys: dict[str, PrivateKey], kind: str) -> None:
    key = keys[kind]
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    public = compressed_spki(key)
    assert serialization.load_der_public_key(public) == key.public_key()
    assert crypto.public_key_kind(public) == kind
    assert verify(public, b"m", reference_sign(key, b"m")) is True


@pytest.mark.parametrize("kind", crypto.KEY_KINDS)
def test_non_canonical_key_encodings_are_refused(keys: dict[str, PrivateKey], kind: str) -> None:
    """OpenSSL parses some BER; we take DER only, so a key has one encoding (found by fuzzing)."""
    key = keys[kind]
    public, signature = spki(key), reference_sign(key, b"m")
    assert public[0] == 0x30 and public[1] < 0x80
    long_length = b"\x30\x81" + public[1:]  # the outer length in a needless long form
    point = 32 if kind == "ed25519" else 65  # the key ends in BIT STRING {0 unused bits, point}
    assert public[-point - 3 : -point] == bytes([0x03, point + 1, 0])
    unused_bits = bytearray(public)
    unused_bits[-point - 1] = 0x07  # the same BIT STRING claiming 7 unused bits
    for bent in (long_length, bytes(unused_bits)):
        assert bent != public
        assert crypto.public_key_kind(bent) is None
        assert verify(bent, b"m", signature) is False
    assert verify(public, b"m", signature) is True
