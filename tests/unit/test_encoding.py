"""Encoding helpers on the hot path (nanomoni.encoding): faster forms, same answers."""

from __future__ import annotations

import base64
import os
import time
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nanomoni import encoding
from nanomoni.encoding import b64url_nopad, b64url_nopad_bytes, is_channel_id, utc_now

URLSAFE = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _reference_channel_id(text: str) -> bool:
    """SPEC §1 [v1.1] spelled out: 43 URL-safe characters, the last with 2 zero bits."""
    return (
        len(text) == 43
        and all(c in URLSAFE for c in text)
        and URLSAFE.index(text[-1]) % 4 == 0
    )


@given(st.text(alphabet=URLSAFE + "+/=\n é", min_size=40, max_size=46))
def test_channel_ids_are_recognised_as_spec_1_says(text: str) -> None:
    assert is_channel_id(text) is _reference_channel_id(text)


def test_real_channel_ids_and_near_misses() -> None:
    for _ in range(200):
        channel_id = b64url_nopad(os.urandom(32))
        assert is_channel_id(channel_id)
        assert not is_channel_id(channel_id + "\n")
        assert not is_channel_id(channel_id[:-1])
        assert not is_channel_id(channel_id[:-1] + "B")  # non-zero padding bits


def test_base64url_bytes_are_the_standard_encoding() -> None:
    for size in range(70):
        data = os.urandom(size)
        expected = base64.urlsafe_b64encode(data).rstrip(b"=")
        assert b64url_nopad_bytes(data) == expected
        assert b64url_nopad(data) == expected.decode()


def test_utc_now_is_an_iso_time_in_utc_now() -> None:
    before = datetime.now(UTC)
    stamp = utc_now()
    after = datetime.now(UTC)
    parsed = datetime.fromisoformat(stamp)
    assert parsed.tzinfo is not None and parsed.utcoffset() is not None
    assert before.replace(microsecond=0) <= parsed <= after
    assert len(stamp) == len("2026-01-01T00:00:00.000000+00:00")


@pytest.mark.parametrize("micros", [0, 1, 999_999, 123_456])
def test_utc_now_formats_as_datetime_does(micros: int, monkeypatch: pytest.MonkeyPatch) -> None:
    for second in (1_800_000_000, 1_800_000_001, 1_800_000_000):  # a new second, and back
        ns = (second * 1_000_000 + micros) * 1000
        monkeypatch.setattr(time, "time_ns", lambda ns=ns: ns)
        expected = datetime.fromtimestamp(second, UTC).replace(microsecond=micros).isoformat()
        assert encoding.utc_now() == expected
