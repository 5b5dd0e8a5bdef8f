"""The services' shared pieces without a server: body decoding, error payloads, the hot
path's routing and body limit, key files, and command-line flags from the environment."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgspec
import pytest

from nanomoni import crypto, wire
from nanomoni.cli import build_parser
from nanomoni.errors import Code, NanoMoniError
from nanomoni.http import HotPath, error_payload
from nanomoni.protocol.model import Mode
from nanomoni.protocol.modes import rules_for
from nanomoni.serve import load_or_create_key
from nanomoni.wire import ValidationFailed, decode


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"k": "1", "token_b64": "x"}', "k"),
        (b'{"k": -1, "token_b64": "x"}', "k"),
        (b'{"k": 1.5, "token_b64": "x"}', "k"),
        (b'{"k": 9223372036854775808, "token_b64": "x"}', "k"),
        (b'{"k": 1}', "token_b64"),
        (b'{"k": 1, "token_b64": "x", "bogus": 2}', "bogus"),
        (b"[1]", "body"),
        (b"{", "body"),
    ],
)
def test_schema_errors_name_the_member(raw: bytes, field: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        decode(raw, wire.PaywordPaymentBody)
    assert caught.value.code is Code.validation_error and caught.value.status == 422
    assert caught.value.errors[0]["field"] == field
    assert field in caught.value.detail


def test_largest_integer_still_decodes() -> None:
    body = decode(b'{"k": 9223372036854775807, "token_b64": "x"}', wire.PaywordPaymentBody)
    assert body.k == 2**63 - 1


def test_error_payload_is_the_spec_body() -> None:
    status, payload = error_payload(NanoMoniError(Code.channel_not_found, "no such channel"))
    assert status == 404
    assert msgspec.json.decode(payload) == {
        "detail": "no such channel",
        "code": "channel_not_found",
    }


def test_unknown_mode_is_not_found() -> None:
    assert rules_for("paytree").mode is Mode.paytree
    with pytest.raises(NanoMoniError) as caught:
        rules_for("paytree_third_opt")
    assert caught.value.status == 404


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, bytes]] = []
        self.fallback: list[str] = []
        self.sent: list[dict[str, Any]] = []

    async def handler(self, first: str, second: str, raw: bytes, client: str) -> tuple[int, bytes]:
        self.calls.append((first, second, raw))
        return 201, b"{}"

    async def app(self, scope: Any, receive: Any, send: Any) -> None:
        self.fallback.append(scope["path"])

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)


def _call(hot: HotPath, recorder: _Recorder, path: str, chunks: list[bytes]) -> None:
    messages = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    scope = {"type": "http", "method": "POST", "path": path}
    asyncio.run(hot(scope, receive, recorder.send))  # type: ignore[arg-type]


def test_hot_path_routes_only_its_shape_and_limits_bodies() -> None:
    recorder = _Recorder()
    hot = HotPath(
        recorder.app,  # type: ignore[arg-type]
        prefix="/api/v1/vendor/channels/",
        suffix="/payments",
        handler=recorder.handler,
        max_body=10,
    )
    _call(hot, recorder, "/api/v1/vendor/channels/payword/abc/payments", [b"12345", b"678"])
    assert recorder.calls == [("payword", "abc", b"12345678")]
    assert recorder.sent[0]["status"] == 201
    _call(hot, recorder, "/api/v1/vendor/channels/payword/abc/closure-requests", [b"{}"])
    _call(hot, recorder, "/api/v1/vendor/channels/a/b/c/payments", [b"{}"])
    assert recorder.fallback == [
        "/api/v1/vendor/channels/payword/abc/closure-requests",
        "/api/v1/vendor/channels/a/b/c/payments",
    ]
    recorder.sent.clear()
    _call(hot, recorder, "/api/v1/vendor/channels/payword/abc/payments", [b"123456", b"78901"])
    assert recorder.sent[0]["status"] == 413
    assert msgspec.json.decode(recorder.sent[1]["body"])["code"] == "payload_too_large"
    assert len(recorder.calls) == 1


def test_key_file_created_once(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "service.pem"
    first = load_or_create_key(path)
    again = load_or_create_key(path)
    assert first.public_key_der == again.public_key_der
    assert path.stat().st_mode & 0o077 == 0  # private key readable by the owner only
    assert crypto.SigningKey.from_pem(path.read_bytes()).public_key_der == first.public_key_der


def test_flags_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NANOMONI_VENDOR_ISSUER_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("NANOMONI_VENDOR_WORKERS", "3")
    monkeypatch.setenv("NANOMONI_ISSUER_ADMIN_TOKEN", "secret")
    vendor = build_parser().parse_args(["vendor"])
    assert vendor.issuer_url == "http://127.0.0.1:9" and vendor.workers == 3
    assert build_parser().parse_args(["vendor", "--workers", "2"]).workers == 2  # the flag wins
    issuer = build_parser().parse_args(["issuer"])
    assert issuer.admin_token == "secret" and issuer.port == 8001
    assert issuer.initial_balance == 10_000_000 and issuer.max_index == 2**24
