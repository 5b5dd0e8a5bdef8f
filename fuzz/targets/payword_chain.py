"""_core.PaywordChain (checkpointed chains) against the whole chain in Python."""

from __future__ import annotations

import reference
from data import FuzzInput

from nanomoni import _core, crypto

MAX_LEN = 200


def test_one_input(data: bytes) -> None:
    inp = FuzzInput(data)
    mode = inp.uint(1)
    alg = reference.ALGS[mode & 1]
    value = crypto.HashAlg.parse(alg).value
    seed = inp.take(32)
    max_k = inp.uint(2) % 2000
    checkpoints = 1 + inp.uint(2) % 2500
    if mode >= 0xF8:  # arguments the core must refuse
        bad_args: list[tuple[object, object, object]] = [
            (seed, 2**63, checkpoints),
            (seed, -1, checkpoints),
            (seed, max_k, 0),
            (seed, max_k, -checkpoints),
            (seed[:31], max_k, checkpoints),
            (seed, 2**64 + max_k, checkpoints),
        ]
        args = bad_args[mode % len(bad_args)]
        try:
            _core.PaywordChain(args[0], args[1], value, args[2])  # type: ignore[arg-type]
        except ValueError:
            return
        raise AssertionError(f"chain arguments accepted: {args[1:]}")
    words = [seed]
    for _ in range(max_k):
        words.append(reference.h(words[-1], alg))
    chain = _core.PaywordChain(seed, max_k, value, checkpoints)
    assert chain.root == words[max_k]
    for _ in range(1 + inp.below(8)):
        k = inp.uint(2)
        if k > max_k:
            try:
                chain.token(k)
            except ValueError:
                continue
            raise AssertionError(f"token({k}) of a chain of {max_k} accepted")
        assert chain.token(k) == words[max_k - k], (max_k, checkpoints, k)


def seeds() -> dict[str, bytes]:
    return {
        "single-word": b"\x00" + bytes(32) + b"\x00\x00\x00\x00\x01\x00\x00\x00",
        "sparse-blake3": b"\x01" + bytes(range(32)) + b"\xe8\x03\x00\x00\x03\x05\x00\x01\x00",
        "dense": b"\x00" + b"\x42" * 32 + b"\x64\x00\x10\x00\x04" + b"\x07\x00" * 4,
        "refused": b"\xf9" + bytes(36),
    }
