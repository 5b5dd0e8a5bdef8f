"""The core's enums, status codes and thresholds, as exported and wrapped by crypto."""

from __future__ import annotations

import typing

import pytest

from nanomoni import _core, crypto


def test_hash_algs_come_from_the_core() -> None:
    assert {alg.value for alg in crypto.HashAlg} == set(range(_core.HASH_ALG_COUNT))
    assert crypto.HashAlg.SHA256 == _core.HASH_SHA256
    assert crypto.HashAlg.BLAKE3 == _core.HASH_BLAKE3
    assert crypto.HASH_ALGS == ("sha256", "blake3")
    assert typing.get_args(crypto.HashAlgName) == crypto.HASH_ALGS
    for alg in crypto.HashAlg:
        assert crypto.HashAlg.parse(alg.label) is alg
        assert crypto.HashAlg.parse(alg) is alg
        # The enum and its wire name select the same suite.
        assert crypto.digest(b"x", alg) == crypto.digest(b"x", alg.label)
        assert crypto.digest(b"x", alg) == _core.digest(b"x", alg.value)


def test_key_kinds_come_from_the_core() -> None:
    assert {kind.value for kind in crypto.KeyKind} == set(range(_core.KEY_KIND_COUNT))
    assert _core.KEY_NONE not in {kind.value for kind in crypto.KeyKind}
    assert crypto.KEY_KINDS == ("p256", "secp256k1", "ed25519")
    assert typing.get_args(crypto.KeyKindName) == crypto.KEY_KINDS
    for kind in crypto.KeyKind:
        assert crypto.KeyKind.parse(kind.label) is kind
        key = crypto.SigningKey.generate(kind)
        assert key.kind == kind.label
        assert crypto.public_key_kind(key.public_key_der) == kind.label
        assert _core.public_key_kind(key.public_key_der) == kind.value


@pytest.mark.parametrize("bad", ["SHA256", "md5", "", 0, None, b"sha256"])
def test_unknown_alg_names_are_value_errors(bad: object) -> None:
    with pytest.raises(ValueError, match="unknown hash alg"):
        crypto.HashAlg.parse(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown hash alg"):
        crypto.verify_payword(bytes(32), 0, bytes(32), bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["P256", "rsa", 2, None])
def test_unknown_key_kinds_are_value_errors(bad: object) -> None:
    with pytest.raises(ValueError, match="unknown key kind"):
        crypto.KeyKind.parse(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown key kind"):
        crypto.SigningKey.generate(bad)  # type: ignore[arg-type]


def test_every_status_has_its_own_message() -> None:
    assert {status.value for status in crypto.Status} == set(range(_core.STATUS_COUNT))
    assert crypto.Status.OK == _core.STATUS_OK == 0
    messages = [status.message for status in crypto.Status]
    assert len(set(messages)) == len(messages)
    unknown = _core.status_message(_core.STATUS_COUNT)
    assert unknown not in messages
    assert _core.status_message(-1) == unknown


def test_failures_report_the_core_status_message() -> None:
    with pytest.raises(ValueError, match=crypto.Status.ERR_KEY_FORMAT.message):
        crypto.SigningKey(b"\x30\x00")
    with pytest.raises(ValueError, match=crypto.Status.ERR_ALG.message):
        _core.digest(b"", _core.HASH_ALG_COUNT)


def test_thresholds_are_exported_once() -> None:
    assert crypto.INLINE_HASHES == _core.INLINE_HASHES
    # Releasing the GIL must pay off well before spreading over threads does,
    # and the event loop keeps only walks the binding would not hand over anyway.
    assert 0 < _core.NOGIL_HASHES < _core.PARALLEL_MIN_HASHES
    assert _core.NOGIL_HASHES < _core.INLINE_HASHES
    assert _core.NOGIL_BYTES > 0 and _core.PARALLEL_MIN_ITEMS > 1
    assert _core.MERKLE_MAX_DEPTH == 64
    assert _core.SIG_MAX == 72


def test_half_made_objects_cannot_exist() -> None:
    """The classes build in __cinit__: bypassing __init__ still needs valid arguments."""
    for cls in (_core.PaywordChain, _core.MerkleTree, _core.SigningKey):
        with pytest.raises(TypeError):
            cls.__new__(cls)  # type: ignore[call-arg]
    chain = _core.PaywordChain.__new__(_core.PaywordChain, bytes(32), 3, 0, 1)  # type: ignore[call-arg]
    assert chain.token(3) == bytes(32)
