"""Type stubs for the native core (nanomoni/_core.pyx)."""

from collections.abc import Sequence

# === hashing, PayWord, Merkle ===

# === signatures ===
