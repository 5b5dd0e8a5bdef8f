"""The native strict base64 decoder (csrc/base64.c) against canonical base64 as
SPEC §1 defines it (fuzz/reference.py: decode strictly, re-encode, compare)."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st
from reference import base64_canonical, base64url_canonical

from nanomoni import _core
from nanomoni.encoding import b64decode, b64decode_joined, b64decode_list
from nanomoni.errors import Code, NanoMoniError

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


@given(st.binary(max_size=200))
def test_every_byte_string_round_trips(data: bytes) -> None:
    text = base64.b64encode(data).decode("ascii")
    assert _core.base64_decode(text) == data
    assert _core.base64_decode(text, len(data)) == data
    assert _core.base64_decode(text, len(data) + 1) is None


@given(st.text(alphabet=ALPHABET + "=-_ \n\x00é", max_size=16))
def test_any_text_is_accepted_exactly_when_canonical(text: str) -> None:
    assert _core.base64_decode(text) == base64_canonical(text)


@given(st.binary(min_size=1, max_size=40), st.integers(0, 1000), st.sampled_from("=AQ/+-\n"))
def test_one_changed_character(data: bytes, at: int, char: str) -> None:
    text = base64.b64encode(data).decode("ascii")
    at %= len(text)
    changed = text[:at] + char + text[at + 1 :]
    assert _core.base64_decode(changed) == base64_canonical(changed)


@pytest.mark.parametrize(
    "text",
    ["QR==", "QUJ=", "A===", "====", "QQ=", "QQ==\n", " QQ==", "AB=C", "A=B=", "QQ==QQ==",
     "QUJD====", "\ud800AAA", "éééé", "QQ-_"],
)  # fmt: skip
def test_refused_texts(text: str) -> None:
    assert _core.base64_decode(text) is None


@pytest.mark.parametrize("value", [b"QQ==", None, 5, ["QQ=="]])
def test_anything_but_a_str_is_refused(value: object) -> None:
    assert _core.base64_decode(value) is None


def test_a_list_is_decoded_whole_or_not_at_all() -> None:
    texts = [base64.b64encode(bytes([n]) * 32).decode() for n in range(5)]
    assert _core.base64_decode_list(texts, 32) == [bytes([n]) * 32 for n in range(5)]
    assert _core.base64_decode_list(texts, 31) is None
    assert _core.base64_decode_list([*texts, "QR=="], 32) is None
    assert _core.base64_decode_list([*texts, 7], 32) is None
    assert _core.base64_decode_list([], 32) == []


@given(st.lists(st.binary(min_size=32, max_size=32), max_size=20))
def test_joined_is_the_list_joined(parts: list[bytes]) -> None:
    texts = [base64.b64encode(part).decode() for part in parts]
    assert _core.base64_decode_joined(texts, 32) == b"".join(parts)


@pytest.mark.parametrize("bad", ["QR==", "QQ==", 7, "A" * 44, "\udcff" * 4])
def test_joined_refuses_any_bad_entry(bad: object) -> None:
    texts: list[object] = [base64.b64encode(bytes(32)).decode(), bad]
    assert _core.base64_decode_joined(texts, 32) is None  # type: ignore[arg-type]


def test_joined_needs_a_length() -> None:
    with pytest.raises(ValueError):
        _core.base64_decode_joined([], -1)


@pytest.mark.parametrize(
    ("text", "length", "why"),
    [
        ("QQ=", None, "x is not valid base64"),
        ("QR==", None, "x is not canonical base64 (non-zero padding bits)"),
        ("QQ==", 32, "x must decode to 32 bytes, got 1"),
    ],
)
def test_refusals_say_why(text: str, length: int | None, why: str) -> None:
    with pytest.raises(NanoMoniError) as refused:
        b64decode(text, length, field="x")
    assert refused.value.code == Code.invalid_encoding
    assert refused.value.detail == why


def test_a_list_refusal_names_the_first_bad_entry() -> None:
    good = base64.b64encode(bytes(32)).decode()
    with pytest.raises(NanoMoniError) as refused:
        b64decode_list([good, good, "QR==", "!"], 32, "siblings_b64")
    assert refused.value.detail.startswith("siblings_b64[2] ")
    with pytest.raises(NanoMoniError) as joined:
        b64decode_joined([good, good, "QR==", "!"], 32, "siblings_b64")
    assert joined.value.detail == refused.value.detail


# --- URL-safe without padding (SPEC §11 header values) ---

URL_ALPHABET = ALPHABET[:-2] + "-_"


@given(st.binary(max_size=200))
def test_url_safe_round_trips(data: bytes) -> None:
    text = base64.urlsafe_b64encode(data).rstrip(b"=")
    assert _core.base64url_encode(data) == text
    assert _core.base64url_decode(text) == data
    assert _core.base64url_decode(text.decode()) == data


@given(st.text(alphabet=URL_ALPHABET + "=+/ \n\x00é", max_size=16))
def test_any_url_safe_text_is_accepted_exactly_when_canonical(text: str) -> None:
    assert _core.base64url_decode(text) == base64url_canonical(text)
    if text.isascii():
        assert _core.base64url_decode(text.encode()) == base64url_canonical(text)


@pytest.mark.parametrize(
    "text",
    ["QR", "QUJ", "Q", "QUJDR", "QQ==", "QQ=", "QQ/", "QQ+A", " QQ", "QQ\n", "\ud800AA", "éé"],
)
def test_refused_url_safe_texts(text: str) -> None:
    assert _core.base64url_decode(text) is None


@pytest.mark.parametrize("value", [None, 5, ["QQ"], bytearray(b"QQ")])
def test_url_safe_takes_only_str_or_bytes(value: object) -> None:
    assert _core.base64url_decode(value) is None
