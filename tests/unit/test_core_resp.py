"""The native RESP packer (csrc/resp.c), every store command's encoding, against
hiredis's own packer as the reference."""

from __future__ import annotations

import hiredis
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nanomoni import _core

INT64 = st.integers(-(2**63), 2**63 - 1)
ARG = st.one_of(st.binary(max_size=300), st.text(max_size=40), INT64)


@given(st.lists(ARG, min_size=1, max_size=20))
def test_every_command_is_packed_as_hiredis_packs_it(args: list[bytes | str | int]) -> None:
    assert _core.resp_command(*args) == hiredis.pack_command(tuple(args))


@pytest.mark.parametrize(
    "value", [0, 9, 10, 99, 100, -1, -10, 2**63 - 1, -(2**63), 10**18, -(10**18)]
)
def test_integers_at_their_digit_boundaries(value: int) -> None:
    text = str(value).encode()
    assert _core.resp_command(value) == b"*1\r\n$%d\r\n%s\r\n" % (len(text), text)


def test_empty_and_binary_arguments() -> None:
    assert _core.resp_command() == b"*0\r\n"
    assert _core.resp_command(b"", "") == b"*2\r\n$0\r\n\r\n$0\r\n\r\n"
    assert _core.resp_command(b"\r\n\x00") == b"*1\r\n$3\r\n\r\n\x00\r\n"
    assert _core.resp_command("é") == b"*1\r\n$2\r\n\xc3\xa9\r\n"


@pytest.mark.parametrize("value", [1.5, None, [1], bytearray(b"x"), memoryview(b"x")])
def test_other_types_are_refused(value: object) -> None:
    with pytest.raises(TypeError):
        _core.resp_command("SET", value)


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, 10**30])
def test_integers_beyond_int64_are_refused(value: int) -> None:
    with pytest.raises(OverflowError):
        _core.resp_command("SET", value)
