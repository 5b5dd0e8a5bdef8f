"""Wallet keys on disk, error mapping and the loopback guard."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from nanomoni import crypto
from nanomoni.client.http import ApiError, api_error, require_loopback
from nanomoni.client.wallet import Wallet
from nanomoni.errors import Code


@pytest.mark.parametrize("kind", crypto.KEY_KINDS)
def test_wallet_round_trips_through_pem(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "keys" / "client.pem"
    created = Wallet.load_or_create(path, kind)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = Wallet.load_or_create(path, "p256")  # the existing key wins over the kind
    assert again.kind == kind
    assert again.public_key_b64 == created.public_key_b64
    message = b"pay me"
    assert crypto.verify_signature(created.key.public_key_der, message, again.sign(message))
    assert crypto.public_key_kind(created.key.public_key_der) == kind


def test_wallet_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "client.pem"
    Wallet.generate().save(path)
    with pytest.raises(FileExistsError):
        Wallet.generate().save(path)


def testapi_error_carries_code_and_status() -> None:
    error = api_error(400, b'{"detail": "payment is not increasing", "code": "non_monotonic"}')
    assert isinstance(error, ApiError)
    assert error.code is Code.non_monotonic
    assert error.status == 400
    assert "increasing" in str(error)
    odd = api_error(502, b"<html>bad gateway</html>")
    assert odd.code is Code.internal_error and odd.status == 502
    new = api_error(400, b'{"detail": "x", "code": "some_future_code"}')
    assert new.raw_code == "some_future_code"


def test_only_loopback_urls_are_accepted() -> None:
    assert require_loopback("http://127.0.0.1:8000/") == "http://127.0.0.1:8000"
    assert require_loopback("http://localhost:1") == "http://localhost:1"
    assert require_loopback("http://[::1]:80") == "http://[::1]:80"
    for bad in ("http://10.0.0.1:8000", "https://127.0.0.1:1", "http://example.com"):
        with pytest.raises(ValueError, match="loopback"):
            require_loopback(bad)
