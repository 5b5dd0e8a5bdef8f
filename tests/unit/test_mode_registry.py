"""The mode registry is the one place that knows the modes (issue 9)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import nanomoni
from nanomoni import wire
from nanomoni.errors import NanoMoniError
from nanomoni.protocol.model import Mode
from nanomoni.protocol.modes import ALL, COMMITMENT_MEMBERS, RULES, rules_for

PACKAGE = Path(nanomoni.__file__).resolve().parent
MODES = {mode.value for mode in Mode}
MEMBER = re.compile(rf"({'|'.join(MODES)})_(root_b64|unit_value|max_k|max_i)")


def _docstrings(tree: ast.Module) -> set[int]:
    """ids of the string constants that document a module, class or function."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def mode_names_in(source: str) -> list[int]:
    """Lines that name a mode in code: `Mode.payword`, `"payword"`, `"payword_max_k"`."""
    tree = ast.parse(source)
    docs = _docstrings(tree)
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id == "Mode" and node.attr in MODES:
                lines.append(node.lineno)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            named = node.value in MODES or MEMBER.fullmatch(node.value)
            if named and id(node) not in docs:
                lines.append(node.lineno)
    return lines


def test_every_mode_has_exactly_one_rules_object() -> None:
    assert [rules.mode for rules in ALL] == list(Mode)
    assert set(RULES) == set(Mode)
    for mode in Mode:
        assert rules_for(mode.value) is RULES[mode]
    with pytest.raises(NanoMoniError) as caught:
        rules_for("cheque")
    assert caught.value.status == 404


def test_no_module_outside_the_registry_names_a_mode() -> None:
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE)
        if relative.parts[:2] == ("protocol", "modes") or relative == Path("protocol/model.py"):
            continue  # the registry itself, and the enum of names
        source = path.read_text()
        for number in mode_names_in(source):
            offenders.append(f"{relative}:{number}: {source.splitlines()[number - 1].strip()}")
    assert offenders == []


def test_the_check_finds_what_it_looks_for() -> None:
    sample = 'if mode is Mode.payword:\n    x = "paytree_max_i"\n    y = "signature_b64"\n'
    assert mode_names_in(sample) == [1, 2]


def test_wire_members_come_from_the_registry() -> None:
    declared = set(wire.OpenChannelRequest.__struct_fields__)
    assert COMMITMENT_MEMBERS <= declared
    for rules in ALL:
        if rules.members is not None:
            assert rules.members.names[0].startswith(rules.mode.value)
    assert COMMITMENT_MEMBERS <= set(wire.ChannelResponse.__struct_fields__)
