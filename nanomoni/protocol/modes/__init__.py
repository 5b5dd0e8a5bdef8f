"""The registry of payment modes: one `ModeRules` per mode (SPEC §5.1–§5.5).

Services, client, demo and bench look a mode up here (or iterate `ALL`) and
call its rules; nothing outside this package branches on a mode. Adding a mode
is one new `ModeRules` here and its tests.
"""

from __future__ import annotations

from typing import Any

from nanomoni.errors import Code, NanoMoniError
from nanomoni.protocol.model import Mode
from nanomoni.protocol.modes.base import (
    HASH_LEN,
    MAX_SIBLINGS,
    CommitmentMembers,
    ModeRules,
    Payer,
    SettledProof,
    Signer,
    Verified,
)
from nanomoni.protocol.modes.paytree import FirstOptRules, SecondOptRules, TreeRules
from nanomoni.protocol.modes.payword import PaywordRules
from nanomoni.protocol.modes.signature import SignatureRules, amount_message

AnyRules = ModeRules[Any, Any]

ALL: tuple[AnyRules, ...] = (
    SignatureRules(),
    PaywordRules(),
    TreeRules(),
    FirstOptRules(),
    SecondOptRules(),
)
RULES: dict[Mode, AnyRules] = {rules.mode: rules for rules in ALL}

# Every wire member some mode adds to opens and channel views.
COMMITMENT_MEMBERS: frozenset[str] = frozenset(
    name for rules in ALL if rules.members is not None for name in rules.members.names
)


def rules_for(mode: Mode | str) -> AnyRules:
    """The rules of a mode named by a path segment; an unknown one does not exist (404)."""
    try:
        return RULES[Mode(mode)]
    except ValueError:
        raise NanoMoniError(Code.channel_not_found, f"unknown payment mode {mode!r}") from None


__all__ = [
    "ALL",
    "COMMITMENT_MEMBERS",
    "HASH_LEN",
    "MAX_SIBLINGS",
    "RULES",
    "AnyRules",
    "CommitmentMembers",
    "ModeRules",
    "Payer",
    "SettledProof",
    "Signer",
    "Verified",
    "amount_message",
    "rules_for",
]
