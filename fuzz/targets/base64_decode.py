"""_core.base64_decode(_list, _joined) and base64url_decode/encode against canonical
base64 (standard, and URL-safe without padding) defined in Python: texts near valid
ones (one character changed, padding moved, bits set), other lengths, non-ASCII text."""

from __future__ import annotations

import base64

import reference
from data import FuzzInput

from nanomoni import _core

# Characters a mutation puts in: the alphabet's edges, padding, and what is not base64.
NOISE = "AQgwBZaz09+/=-_ \n\x00é\ud800"


def text_of(inp: FuzzInput) -> str:
    text = base64.b64encode(inp.blob(64)).decode("ascii")
    for _ in range(inp.below(3)):
        if not text or inp.flag():
            text += inp.pick(NOISE)
        else:
            at = inp.below(len(text))
            text = text[:at] + inp.pick(NOISE) + text[at + 1 :]
    return text


def test_one_input(data: bytes) -> None:
    inp = FuzzInput(data)
    texts = [text_of(inp) for _ in range(1 + inp.below(4))]
    expected = [reference.base64_canonical(text) for text in texts]
    for text, want in zip(texts, expected, strict=True):
        assert _core.base64_decode(text) == want, text
        length = inp.below(50)
        exact = want if want is not None and len(want) == length else None
        assert _core.base64_decode(text, length) == exact, (text, length)
    length = len(expected[0]) if expected[0] is not None else 32
    fits = all(want is not None and len(want) == length for want in expected)
    assert _core.base64_decode_list(texts, length) == (expected if fits else None), texts
    joined = b"".join(want for want in expected if want is not None) if fits else None
    assert _core.base64_decode_joined(texts, length) == joined, texts
    url = url_text_of(inp)
    want_url = reference.base64url_canonical(url)
    assert _core.base64url_decode(url) == want_url, url
    if url.isascii():
        assert _core.base64url_decode(url.encode()) == want_url, url
    if want_url is not None:
        assert _core.base64url_encode(want_url).decode() == url


def url_text_of(inp: FuzzInput) -> str:
    """The URL-safe, unpadded form of a mutated text (its "=" kept where they were put)."""
    text = text_of(inp)
    return text.replace("+", "-").replace("/", "_").rstrip("=") if inp.flag() else text


def seeds() -> dict[str, bytes]:
    return {
        "one-byte": b"\x01A\x00",
        "hash": b"\x20" + bytes(range(32)) + b"\x00",
        "mutated": b"\x05hello\x02\x01\x03\x07\x00\x02",
        "two-texts": b"\x03abc\x00\x01\x02xy\x00",
    }
