"""_core.verify_merkle against the Python fold: honest, tampered and malformed proofs."""

from __future__ import annotations

import reference
from data import FuzzInput

from nanomoni import _core, crypto

MAX_LEN = 2400


def test_one_input(data: bytes) -> None:
    inp = FuzzInput(data)
    mode = inp.uint(1)
    alg = reference.ALGS[mode & 1]
    value = crypto.HashAlg.parse(alg).value
    depth = inp.below(_core.MERKLE_MAX_DEPTH + 1)
    i = inp.uint(8) % (1 << depth)
    leaf = inp.take(32)
    siblings = [inp.take(32) for _ in range(depth)]
    honest = reference.fold(leaf, i, siblings, alg)
    root = honest
    claimed_depth = depth
    match (mode >> 1) % 8:
        case 0 | 1 | 2:
            pass
        case 3:  # one bit of the root off
            root = (int.from_bytes(root, "big") ^ (1 << inp.below(256))).to_bytes(32, "big")
        case 4:  # another leaf index
            if depth == 0:
                return
            i ^= 1 << inp.below(depth)
        case 5:  # a sibling more or fewer than the depth claims
            siblings = siblings[:-1] if siblings and inp.flag() else [*siblings, leaf]
        case 6:  # arguments the core must refuse
            cases = [
                (leaf, 1 << depth, siblings, root, depth),  # i past 2**depth
                (leaf, -1, siblings, root, depth),
                (leaf, i, siblings, root, 65),
                (leaf, i, siblings, root, -1),
                (leaf[:31], i, siblings, root, depth),
                (leaf, i, siblings, root + b"\x00", depth),
                (
                    leaf,
                    i,
                    [*siblings[:-1], b"short"] if siblings else [b"short"],
                    root,
                    max(depth, 1),
                ),
                (leaf, i, [*siblings[:-1], None] if siblings else [None], root, max(depth, 1)),
            ]
            args = cases[inp.below(len(cases))]
            if args[1] == 1 << depth and depth == 64:
                args = (leaf, 2**64, siblings, root, depth)
            try:
                _core.verify_merkle(*args, value)  # type: ignore[arg-type]
            except (ValueError, TypeError):
                return
            raise AssertionError("malformed proof arguments accepted")
        case _:
            root = inp.take(32)
    expected = len(siblings) == claimed_depth and reference.fold(leaf, i, siblings, alg) == root
    assert _core.verify_merkle(leaf, i, siblings, root, claimed_depth, value) == expected


def seeds() -> dict[str, bytes]:
    return {
        "depth0": b"\x00\x00" + bytes(8) + bytes(32),
        "depth3": b"\x00\x03\x05" + bytes(7) + bytes(range(128)),
        "depth64-blake3": b"\x01\x40" + b"\xff" * 8 + b"\x33" * 32 * 65,
        "tampered": b"\x06\x02\x01" + bytes(7) + bytes(96) + b"\x09",
        "refused": b"\x0c\x04" + bytes(8) + bytes(160) + b"\x02",
    }
