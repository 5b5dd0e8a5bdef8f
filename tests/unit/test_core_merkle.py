"""PayTree Merkle trees (SPEC §5.3–5.4) against a pure-Python reference."""

from __future__ import annotations

import os
import random

import pytest
import reference
from hypothesis import given, settings
from hypothesis import strategies as st

from nanomoni import _core, crypto

ALGS = reference.ALGS
h = reference.h


def random_leaves(count: int, rng: random.Random) -> list[bytes]:
    return [rng.randbytes(32) for _ in range(count)]


@settings(max_examples=40)
@given(count=st.integers(min_value=1, max_value=70), alg=st.sampled_from(ALGS), salt=st.integers())
def test_core_tree_matches_reference(count: int, alg: str, salt: int) -> None:
    leaves = random_leaves(count, random.Random(salt))
    levels = reference.merkle_levels(leaves, alg)
    tree = crypto.MerkleTree.from_leaves(leaves, alg)
    depth = (count - 1).bit_length()
    assert (tree.depth, tree.leaf_count, tree.root) == (depth, count, levels[-1][0])
    for level, nodes in enumerate(levels):  # including every padding node
        assert [tree.node(level, pos) for pos in range(len(nodes))] == nodes
    for i in range(count):
        proof = tree.proof(i)
        assert proof == [levels[lv][(i >> lv) ^ 1] for lv in range(depth)]
        assert tree.leaf(i) == leaves[i]
        assert crypto.verify_merkle(leaves[i], i, proof, tree.root, depth, alg)
        assert reference.fold(leaves[i], i, proof, alg) == tree.root


@settings(max_examples=30)
@given(count=st.integers(min_value=1, max_value=40), alg=st.sampled_from(ALGS), salt=st.integers())
def test_core_tree_from_secrets(count: int, alg: str, salt: int) -> None:
    secrets = random_leaves(count, random.Random(salt))
    leaves = [h(s, alg) for s in secrets]
    tree = crypto.MerkleTree.from_secrets(secrets, alg)
    assert tree.root == reference.merkle_levels(leaves, alg)[-1][0]
    assert [tree.leaf(i) for i in range(count)] == leaves


@settings(max_examples=40)
@given(count=st.integers(min_value=2, max_value=64), alg=st.sampled_from(ALGS), data=st.data())
def test_core_verify_merkle_rejects_tampering(count: int, alg: str, data: st.DataObject) -> None:
    leaves = random_leaves(count, random.Random(count))
    tree = crypto.MerkleTree.from_leaves(leaves, alg)
    i = data.draw(st.integers(min_value=0, max_value=count - 1))
    proof = tree.proof(i)
    depth = tree.depth
    flipped = bytes([leaves[i][0] ^ 1]) + leaves[i][1:]
    assert not crypto.verify_merkle(flipped, i, proof, tree.root, depth, alg)
    level = data.draw(st.integers(min_value=0, max_value=depth - 1))
    bad_proof = list(proof)
    bad_proof[level] = bytes(32) if proof[level] != bytes(32) else b"\x01" * 32
    assert not crypto.verify_merkle(leaves[i], i, bad_proof, tree.root, depth, alg)
    # The right proof at the neighbour's index fails, unless the neighbour is
    # padding equal to this very leaf.
    if tree.node(0, i ^ 1) != leaves[i]:
        assert not crypto.verify_merkle(leaves[i], i ^ 1, proof, tree.root, depth, alg)
    # Exact depth: one sibling too few or too many is never valid.
    assert not crypto.verify_merkle(leaves[i], i, proof[:-1], tree.root, depth, alg)
    assert not crypto.verify_merkle(leaves[i], i, [*proof, bytes(32)], tree.root, depth, alg)


@pytest.mark.parametrize("alg", ALGS)
def test_core_depth_zero_and_one(alg: str) -> None:
    leaf = os.urandom(32)
    one = crypto.MerkleTree.from_leaves([leaf], alg)
    assert (one.depth, one.leaf_count, one.root, one.proof(0)) == (0, 1, leaf, [])
    assert crypto.verify_merkle(leaf, 0, [], leaf, 0, alg)
    assert not crypto.verify_merkle(leaf, 0, [leaf], leaf, 0, alg)
    assert crypto.merkle_fold(leaf, 0, [], alg) == leaf

    a, b = os.urandom(32), os.urandom(32)
    two = crypto.MerkleTree.from_leaves([a, b], alg)
    assert (two.depth, two.root) == (1, h(a + b, alg))
    assert two.proof(0) == [b] and two.proof(1) == [a]
    assert crypto.verify_merkle(b, 1, [a], two.root, 1, alg)
    assert not crypto.verify_merkle(b, 0, [a], two.root, 1, alg)


@pytest.mark.parametrize("count", [3, 5, 6, 7, 9, 17, 33, 1025, 4099])
def test_core_odd_counts_pad_with_last_leaf(count: int) -> None:
    leaves = random_leaves(count, random.Random(count))
    for alg in ALGS:
        levels = reference.merkle_levels(leaves, alg)
        tree = crypto.MerkleTree.from_leaves(leaves, alg)
        assert tree.root == levels[-1][0]
        width = len(levels[0])
        assert tree.node(0, width - 1) == leaves[-1]
        last = count - 1
        assert crypto.verify_merkle(
            leaves[last], last, tree.proof(last), tree.root, tree.depth, alg
        )
        assert crypto.merkle_root(leaves, alg) == tree.root
        assert crypto.merkle_proof(leaves, last, alg) == tree.proof(last)


@settings(max_examples=40)
@given(count=st.integers(min_value=1, max_value=64), alg=st.sampled_from(ALGS), data=st.data())
def test_core_merkle_fold_gives_ancestor(count: int, alg: str, data: st.DataObject) -> None:
    """First-opt (SPEC §5.4): t siblings fold leaf i to node(t, i >> t)."""
    leaves = random_leaves(count, random.Random(-count))
    tree = crypto.MerkleTree.from_leaves(leaves, alg)
    i = data.draw(st.integers(min_value=0, max_value=count - 1))
    last = data.draw(st.integers(min_value=0, max_value=count - 1))
    t = crypto.first_opt_levels(i, last, tree.depth)
    siblings = tree.proof(i)[:t]
    assert crypto.merkle_fold(leaves[i], i, siblings, alg) == tree.node(t, i >> t)
    for levels in range(tree.depth + 1):
        folded = crypto.merkle_fold(leaves[i], i, tree.proof(i)[:levels], alg)
        assert folded == tree.node(levels, i >> levels)


@settings(max_examples=40)
@given(count=st.integers(min_value=1, max_value=64), alg=st.sampled_from(ALGS), data=st.data())
def test_core_merkle_path_node_folds_a_stored_path(
    count: int, alg: str, data: st.DataObject
) -> None:
    """A stored `secret ‖ siblings` blob folds like digest + merkle_fold over its parts."""
    rng = random.Random(count)
    secrets = random_leaves(count, rng)
    tree = crypto.MerkleTree.from_secrets(secrets, alg)
    last = data.draw(st.integers(min_value=0, max_value=count - 1))
    path = secrets[last] + b"".join(tree.proof(last))
    leaf = crypto.digest(secrets[last], alg)
    for levels in range(tree.depth + 1):
        expected = crypto.merkle_fold(leaf, last, tree.proof(last)[:levels], alg)
        assert crypto.merkle_path_node(path, last, levels, alg) == expected
        assert expected == tree.node(levels, last >> levels)
    with pytest.raises(ValueError, match="path must hold a secret and"):
        crypto.merkle_path_node(path, last, tree.depth + 1, alg)
    with pytest.raises(ValueError, match="levels must be in"):
        crypto.merkle_path_node(path, last, 65, alg)
    with pytest.raises(ValueError, match="i must be"):
        crypto.merkle_path_node(path, -1, 0, alg)
    with pytest.raises(ValueError, match="unknown hash alg"):
        _core.merkle_path_node(path, last, 0, 7)


@pytest.mark.parametrize("alg", ALGS)
def test_core_max_depth_64(alg: str) -> None:
    rng = random.Random(64)
    leaf = rng.randbytes(32)
    siblings = random_leaves(64, rng)
    for i in (0, 1, 2**63, 2**64 - 1, rng.getrandbits(64)):
        root = reference.fold(leaf, i, siblings, alg)
        assert crypto.merkle_fold(leaf, i, siblings, alg) == root
        assert crypto.verify_merkle(leaf, i, siblings, root, 64, alg)
        assert not crypto.verify_merkle(leaf, i ^ (1 << 63), siblings, root, 64, alg)
        assert not crypto.verify_merkle(leaf, i, siblings[:63], root, 64, alg)
    with pytest.raises(ValueError, match="at most 64 siblings"):
        crypto.merkle_fold(leaf, 0, [*siblings, leaf], alg)
    with pytest.raises(ValueError, match="depth must be in"):
        crypto.verify_merkle(leaf, 0, [*siblings, leaf], leaf, 65, alg)
    with pytest.raises(ValueError, match="i must be"):
        crypto.verify_merkle(leaf, 2**64, siblings, leaf, 64, alg)


def test_core_verify_merkle_bad_input() -> None:
    good = bytes(32)
    with pytest.raises(ValueError, match="i must be below 2\\*\\*depth"):
        crypto.verify_merkle(good, 4, [good, good], good, 2)
    # Deep trees: the message's 2**depth is computed without overflow (found by fuzzing).
    with pytest.raises(ValueError, match=f"2\\*\\*depth = {2**56}, got {2**57}"):
        crypto.verify_merkle(good, 2**57, [good] * 56, good, 56)
    with pytest.raises(ValueError, match="i must be"):
        crypto.verify_merkle(good, -1, [good], good, 1)
    for depth in (-1, 65, 2**70):
        with pytest.raises(ValueError, match="depth must be in"):
            crypto.verify_merkle(good, 0, [], good, depth)
    with pytest.raises(ValueError, match="leaf must be 32 bytes"):
        crypto.verify_merkle(bytes(31), 0, [good], good, 1)
    with pytest.raises(ValueError, match="root must be 32 bytes"):
        crypto.verify_merkle(good, 0, [good], bytes(64), 1)
    with pytest.raises(ValueError, match=r"siblings\[1\] must be 32 bytes"):
        crypto.verify_merkle(good, 0, [good, b"short"], good, 2)
    with pytest.raises(TypeError, match=r"siblings\[0\] must be bytes"):
        crypto.verify_merkle(good, 0, [None], good, 1)  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"siblings\[0\] must be 32 bytes"):
        crypto.merkle_fold(good, 0, [bytes(33)])
    with pytest.raises(ValueError, match="leaf must be 32 bytes"):
        crypto.merkle_fold(b"", 0, [])
    with pytest.raises(ValueError, match="i must be"):
        crypto.merkle_fold(good, -2, [])
    with pytest.raises(ValueError, match="unknown hash alg"):
        _core.verify_merkle(good, 0, [], good, 0, 3)
    with pytest.raises(ValueError, match="unknown hash alg"):
        _core.merkle_fold(good, 0, [], -1)


def test_core_tree_bad_input() -> None:
    with pytest.raises(ValueError, match="at least one leaf"):
        crypto.MerkleTree.from_leaves([])
    with pytest.raises(ValueError, match=r"leaves\[2\] must be 32 bytes"):
        crypto.MerkleTree.from_leaves([bytes(32), bytes(32), bytes(31)])
    with pytest.raises(ValueError, match=r"secrets\[0\] must be 32 bytes"):
        crypto.MerkleTree.from_secrets([b"x"])
    with pytest.raises(TypeError, match=r"leaves\[0\] must be bytes"):
        crypto.MerkleTree.from_leaves(["a" * 32])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="unknown hash alg"):
        _core.MerkleTree([bytes(32)], 9, False)
    tree = crypto.MerkleTree.from_leaves(random_leaves(5, random.Random(5)))
    with pytest.raises(ValueError, match="i must be in"):
        tree.proof(5)  # a padding position is not a payable leaf
    with pytest.raises(ValueError, match="i must be"):
        tree.proof(-1)
    for level, pos in ((0, 8), (3, 1), (4, 0), (-1, 0), (0, -1), (1, 2**64), (2**70, 0)):
        with pytest.raises(ValueError):
            tree.node(level, pos)
    assert tree.node(0, 7) == tree.node(0, 4)  # padding repeats the last leaf


@pytest.mark.parametrize("alg", ALGS)
def test_core_large_tree_built_on_several_threads(alg: str) -> None:
    """Big levels are split across threads; every slice must land in place."""
    rng = random.Random(alg)
    secrets = random_leaves(50_001, rng)  # odd, and level 0 and 1 above the threading minimum
    assert 50_001 // 2 > _core.PARALLEL_MIN_HASHES
    leaves = [h(s, alg) for s in secrets]
    levels = reference.merkle_levels(leaves, alg)
    tree = crypto.MerkleTree.from_secrets(secrets, alg)
    assert tree.root == levels[-1][0]
    for level in range(tree.depth + 1):
        for pos in {0, len(levels[level]) // 2, len(levels[level]) - 1}:
            assert tree.node(level, pos) == levels[level][pos]
    split = _core.PARALLEL_MIN_HASHES
    for i in (0, split - 1, split, 25_000, 50_000, rng.randrange(50_001)):
        assert tree.proof(i) == [levels[lv][(i >> lv) ^ 1] for lv in range(tree.depth)]


def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_core_native_memory_is_released() -> None:
    """Trees, chains and failed constructions give their C memory back."""
    leaves = random_leaves(1 << 15, random.Random(15))  # about 2 MiB of nodes per tree
    crypto.MerkleTree.from_leaves(leaves)
    before = _resident_bytes()
    for _ in range(100):
        tree = crypto.MerkleTree.from_leaves(leaves)
        del tree
        chain = crypto.PaywordChain(bytes(32), 1 << 16, checkpoints=1 << 16)  # 2 MiB of words
        del chain
        with pytest.raises(ValueError):  # fails after its nodes were allocated
            crypto.MerkleTree.from_leaves([*leaves[:-1], b"short"])
    # 300 leaked allocations of ~2 MiB would add ~600 MiB.
    assert _resident_bytes() - before < 64 << 20
