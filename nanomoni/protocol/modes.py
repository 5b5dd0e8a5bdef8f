"""Facts about the five payment modes that opening, payments and settlement share."""

from __future__ import annotations

from functools import lru_cache

from nanomoni.encoding import b64decode
from nanomoni.errors import Code, NanoMoniError
from nanomoni.protocol.model import Mode

TREE_MODES: frozenset[Mode] = frozenset(
    {Mode.paytree, Mode.paytree_first_opt, Mode.paytree_second_opt}
)

# The three wire members (root, unit value, max index) each committed mode adds
# to open requests and channel responses (SPEC §4.3).
MEMBERS: dict[Mode, tuple[str, str, str]] = {
    Mode.payword: ("payword_root_b64", "payword_unit_value", "payword_max_k"),
    Mode.paytree: ("paytree_root_b64", "paytree_unit_value", "paytree_max_i"),
    Mode.paytree_first_opt: (
        "paytree_first_opt_root_b64",
        "paytree_first_opt_unit_value",
        "paytree_first_opt_max_i",
    ),
    Mode.paytree_second_opt: (
        "paytree_second_opt_root_b64",
        "paytree_second_opt_unit_value",
        "paytree_second_opt_max_i",
    ),
}

# SPEC §7: no proof may carry more siblings than this, whatever the tree.
MAX_SIBLINGS = 64

HASH_LEN = 32


def require_mode(path_mode: Mode, channel_mode: Mode, what: str) -> None:
    """A channel may only be used through its own mode's paths."""
    if path_mode != channel_mode:
        raise NanoMoniError(
            Code.mode_mismatch,
            f"{what} for a {path_mode.value} channel, but this is a {channel_mode.value} channel",
        )


def decode_siblings(texts: list[str]) -> list[bytes]:
    """Base64 Merkle siblings of exactly 32 bytes each; errors name the first bad entry."""
    try:
        return [b64decode(text, HASH_LEN) for text in texts]
    except NanoMoniError:
        for n, text in enumerate(texts):
            b64decode(text, HASH_LEN, field=f"siblings_b64[{n}]")
        raise


@lru_cache(maxsize=8192)
def key_der(public_key_der_b64: str) -> bytes:
    """A channel party's DER key; terms never change, so decoding once is enough."""
    return b64decode(public_key_der_b64, field="public key")
