"""_core.MerkleTree (built from leaves or secrets): root, nodes and proofs against
the padded tree of SPEC §5.3 written out in Python."""

from __future__ import annotations

import reference
from data import FuzzInput

from nanomoni import _core, crypto

MAX_LEN = 2048


def test_one_input(data: bytes) -> None:
    inp = FuzzInput(data)
    mode = inp.uint(1)
    alg = reference.ALGS[mode & 1]
    value = crypto.HashAlg.parse(alg).value
    from_secrets = bool(mode & 2)
    count = 1 + inp.below(300)
    distinct = 1 + inp.below(64)  # the input rarely holds 32 fresh bytes per leaf
    pool = [inp.take(32) for _ in range(distinct)]
    items = [pool[(j * 7 + j // distinct) % distinct] for j in range(count)]
    if mode >= 0xF0:  # one malformed item, or none at all
        bad_at = inp.below(count)
        bad: list[object] = [b"", items[bad_at][:31], items[bad_at] + b"\x00", None, 32]
        broken: list[object] = list(items)
        broken[bad_at] = bad[mode % len(bad)]
        for attempt in (broken, []):
            try:
                _core.MerkleTree(attempt, value, from_secrets)  # type: ignore[arg-type]
            except (ValueError, TypeError):
                continue
            raise AssertionError("a tree was built from malformed items")
        return

    leaves = [reference.h(s, alg) for s in items] if from_secrets else items
    levels = reference.merkle_levels(leaves, alg)
    depth = len(levels) - 1
    tree = _core.MerkleTree(items, value, from_secrets)
    assert (tree.depth, tree.leaf_count, tree.root) == (depth, count, levels[-1][0]), count
    for _ in range(1 + inp.below(12)):
        level, pos = inp.below(depth + 3), inp.uint(2) % (2 * len(levels[0]) + 2)
        if level <= depth and pos < len(levels[level]):
            assert tree.node(level, pos) == levels[level][pos], (count, level, pos)
        else:
            try:
                tree.node(level, pos)
            except ValueError:
                continue
            raise AssertionError(f"node({level}, {pos}) of a depth-{depth} tree accepted")
    for _ in range(1 + inp.below(6)):
        i = inp.uint(2) % (count + 2)
        if i < count:
            proof = tree.proof(i)
            assert proof == [levels[lv][(i >> lv) ^ 1] for lv in range(depth)], (count, i)
            assert _core.verify_merkle(leaves[i], i, proof, tree.root, depth, value)
        else:
            try:
                tree.proof(i)
            except ValueError:
                continue
            raise AssertionError(f"proof({i}) of {count} leaves accepted")


def seeds() -> dict[str, bytes]:
    return {
        "one-leaf": b"\x00\x00\x00" + bytes(32),
        "five-leaves": b"\x00\x04\x04" + bytes(range(160)) + b"\x03\x01\x01\x02\x02",
        "odd-secrets-blake3": b"\x03\x10\x02" + b"\x5a" * 96 + b"\x05\x00\x07\x00",
        "malformed": b"\xf2\x08\x00" + bytes(32) + b"\x03",
    }
