# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Thin binding over csrc/: argument checks, GIL release around C calls, nothing else."""

# === hashing, PayWord, Merkle (csrc/sha256, blake3, hash, chain, merkle) ===

# === signatures (csrc/sigverify, sign) ===
