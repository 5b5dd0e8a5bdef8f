"""_core.resp_command (every store command's encoding) against hiredis.pack_command:
bytes, str (any code point that encodes), ints at the int64 edges; other types and
larger ints refused."""

from __future__ import annotations

import hiredis
from data import FuzzInput

from nanomoni import _core

EDGES = (0, 9, 10, -1, -9, -10, 2**63 - 1, -(2**63), 10**18, -(10**18))
REFUSED = (2**63, -(2**63) - 1, 1.5, None, bytearray(b"x"))


def argument(inp: FuzzInput) -> bytes | str | int:
    kind = inp.below(4)
    if kind == 0:
        return inp.blob(80)
    if kind == 1:
        return inp.blob(40).decode("utf-8", "replace")
    if kind == 2:
        return inp.pick(EDGES)
    return int.from_bytes(inp.take(8), "little", signed=True)


def test_one_input(data: bytes) -> None:
    inp = FuzzInput(data)
    args = tuple(argument(inp) for _ in range(inp.below(12)))
    if inp.flag() and inp.flag():  # one argument the packer must refuse
        bad = inp.pick(REFUSED)
        try:
            _core.resp_command(*args, bad)  # type: ignore[arg-type]  # refused: the point
        except (TypeError, OverflowError):
            return
        raise AssertionError(f"{bad!r} accepted")
    packed = _core.resp_command(*args)
    expected = hiredis.pack_command(args) if args else b"*0\r\n"  # type: ignore[arg-type]
    assert packed == expected, args


def seeds() -> dict[str, bytes]:
    return {
        "empty": b"\x00",
        "one-blob": b"\x01\x00\x05hello",
        "ints": b"\x03\x02\x00\x02\x06\x03" + bytes(8),
        "text": b"\x02\x01\x04ab\xc3\xa9",
    }
