"""Malformed input, row by row: every row gets its 4xx and SPEC code and changes no state."""

from __future__ import annotations

import os
from typing import Any

import httpx
import pytest

from nanomoni.encoding import b64encode

Stack = Any  # the `stack` fixture of conftest.py
ADMIN = {"Authorization": "Bearer e2e-admin-token"}
BIG = "A" * (70 * 1024)
TOKEN = b64encode(os.urandom(32))

# (service, path template, JSON body or raw bytes, status, code, member named in a 422)
ROWS: list[tuple[str, str, Any, int, str, str | None]] = [
    (
        "vendor",
        "/channels/payword/{pw}/payments",
        {"k": 2, "token_b64": "***"},
        400,
        "invalid_encoding",
        None,
    ),
    (
        "vendor",
        "/channels/payword/{pw}/payments",
        {"k": 2, "token_b64": "AAA"},
        400,
        "invalid_encoding",
        None,
    ),
    (
        "vendor",
        "/channels/payword/{pw}/payments",
        {"k": 2, "token_b64": b64encode(b"short")},
        400,
        "invalid_encoding",
        None,
    ),
    (
        "vendor",
        "/channels/payword/{pw}/payments",
        {"k": -1, "token_b64": TOKEN},
        422,
        "validation_error",
        "k",
    ),
    (
        "vendor",
        "/channels/payword/{pw}/payments",
        {"k": 2.5, "token_b64": TOKEN},
        422,
        "validation_error",
        "k",
    ),
    (
        "vendor",
        "/channels/payword/{pw}/payments",
        {"k": 2.0, "token_b64": TOKEN},
        422,
        "validation_error",
        "k",
    ),
    (
        "vendor",
        "/channels/payword/{pw}/payments",
        {"k": "2", "token_b64": TOKEN},
        422,
        "validation_error",
        "k",
    ),
    (
        "vendor",
        "/channels/payword/{pw}/payments",
        {"k": True, "token_b64": TOKEN},
        422,
        "validation_error",
        "k",
    ),
    (
        "vendor",
        "/channels/payword/{pw}/payments",
        {"k": 2**63, "token_b64": TOKEN},
        422,
        "validation_error",
        "k",
    ),
    (
        "vendor",
        "/channels/payword/{pw}/payments",
        {"k": 2**64 + 7, "token_b64": TOKEN},
        422,
        "validation_error",
        "k",
    ),
    (
        "vendor",
        "/channels/payword/{pw}/payments",
        {"k": 2, "token_b64": TOKEN, "extra": 1},
        422,
        "validation_error",
        "extra",
    ),
    ("vendor", "/channels/payword/{pw}/payments", {"k": 2}, 422, "validation_error", "token_b64"),
    ("vendor", "/channels/payword/{pw}/payments", b"{not json", 422, "validation_error", None),
    ("vendor", "/channels/payword/{pw}/payments", [1, 2], 422, "validation_error", None),
    (
        "vendor",
        "/channels/payword/{pw}/payments",
        {"k": 2, "token_b64": BIG},
        413,
        "payload_too_large",
        None,
    ),
    (
        "vendor",
        "/channels/payword/{pw}/payments",
        {"k": 2, "token_b64": TOKEN, "channel_id": "x"},
        400,
        "id_mismatch",
        None,
    ),
    (
        "vendor",
        "/channels/payword/" + "Z" * 43 + "/payments",
        {"k": 2, "token_b64": TOKEN},
        404,
        "channel_not_found",
        None,
    ),
    (
        "vendor",
        "/channels/payword/{pw}/payments",
        {"i": 2, "leaf_b64": TOKEN, "siblings_b64": []},
        422,
        "validation_error",
        None,
    ),
    (
        "vendor",
        "/channels/paytree/{pt}/payments",
        {"i": 2, "secret_b64": TOKEN, "siblings_b64": "x"},
        422,
        "validation_error",
        "siblings_b64",
    ),
    (
        "vendor",
        "/channels/paytree/{pt}/payments",
        {"i": 2, "secret_b64": TOKEN, "siblings_b64": ["!!"] * 6},
        400,
        "invalid_encoding",
        None,
    ),
    (
        "vendor",
        "/channels/paytree/{pt}/payments",
        {"i": 2, "secret_b64": TOKEN, "siblings_b64": [TOKEN] * 65},
        400,
        "invalid_proof",
        None,
    ),
    (
        "vendor",
        "/channels/paytree/{pt}/payments",
        {"i": 1.5, "secret_b64": TOKEN, "siblings_b64": []},
        422,
        "validation_error",
        "i",
    ),
    (
        "vendor",
        "/channels/paytree/{pt}/closure-requests",
        {"channel_id": "other"},
        400,
        "id_mismatch",
        None,
    ),
    (
        "vendor",
        "/channels/paytree/{pt}/closure-requests",
        {},
        422,
        "validation_error",
        "channel_id",
    ),
    (
        "vendor",
        "/channels/signature/{sg}/payments",
        {"channel_id": "{sg}", "cumulative_owed_amount": "9", "signature_b64": TOKEN},
        422,
        "validation_error",
        "cumulative_owed_amount",
    ),
    (
        "vendor",
        "/channels/signature/{sg}/payments",
        {"channel_id": "{sg}", "cumulative_owed_amount": 0, "signature_b64": TOKEN},
        400,
        "invalid_amount",
        None,
    ),
    (
        "vendor",
        "/channels/signature/{sg}/payments",
        {"channel_id": "{sg}", "cumulative_owed_amount": 20, "signature_b64": "%%"},
        400,
        "invalid_encoding",
        None,
    ),
    (
        "vendor",
        "/channels/signature/{sg}/payments",
        {"channel_id": "{pw}", "cumulative_owed_amount": 9, "signature_b64": TOKEN},
        400,
        "id_mismatch",
        None,
    ),
    # [v1.1] A channel id is 43 canonical URL-safe characters; anything else (an escaped
    # '?' or '#', a 44th character, '.') is no channel, decided before the store or issuer.
    *(
        (
            "vendor",
            f"/channels/payword/{alias}/payments",
            {"k": 2, "token_b64": TOKEN},
            404,
            "channel_not_found",
            None,
        )
        for alias in ("{pw}%3F", "{pw}%3Fx=1", "{pw}%23", "{pw}%23frag", "{pw}A", "%2E", "%2E%2E")
    ),
    *(
        (
            "vendor",
            f"/channels/paytree/{alias}/closure-requests",
            {"channel_id": "{pt}"},
            404,
            "channel_not_found",
            None,
        )
        for alias in ("{pt}%3F", "{pt}%23")
    ),
    (
        "issuer",
        "/channels/payword/{pw}%3F/settlements",
        {
            "vendor_public_key_der_b64": TOKEN,
            "k": 1,
            "token_b64": TOKEN,
            "vendor_signature_b64": TOKEN,
        },
        404,
        "channel_not_found",
        None,
    ),
    # [v1.1] A closure needs the client's signed consent or the admin token.
    (
        "vendor",
        "/channels/paytree/{pt}/closure-requests",
        {"channel_id": "{pt}"},
        401,
        "unauthorized",
        None,
    ),
    (
        "vendor",
        "/channels/paytree/{pt}/closure-requests",
        {"channel_id": "{pt}", "client_signature_b64": TOKEN},
        401,
        "unauthorized",
        None,
    ),
    # [v1.1] A tree payment reveals its leaf's secret.
    (
        "vendor",
        "/channels/paytree/{pt}/payments",
        {"i": 2, "leaf_b64": TOKEN, "siblings_b64": []},
        422,
        "validation_error",
        "secret_b64",
    ),
    ("vendor", "/channels/payword/{pw}/nothing-here", {}, 404, "not_found", None),
    (
        "vendor",
        "/channels/nomode/{pw}/payments",
        {"k": 2, "token_b64": TOKEN},
        404,
        "channel_not_found",
        None,
    ),
    (
        "issuer",
        "/accounts",
        {"client_public_key_der_b64": "{client}", "extra": True},
        422,
        "validation_error",
        "extra",
    ),
    ("issuer", "/accounts", {}, 422, "validation_error", "client_public_key_der_b64"),
    (
        "issuer",
        "/accounts/deposits",
        {"public_key_der_b64": "{client}", "amount": -5},
        422,
        "validation_error",
        "amount",
    ),
    (
        "issuer",
        "/accounts/deposits",
        {"public_key_der_b64": "{client}", "amount": 1e3},
        422,
        "validation_error",
        "amount",
    ),
    (
        "issuer",
        "/channels/payword",
        {"client_public_key_der_b64": "{client}", "amount": "5"},
        422,
        "validation_error",
        None,
    ),
    (
        "issuer",
        "/channels/payword",
        {
            "client_public_key_der_b64": "{client}",
            "vendor_public_key_der_b64": "{client}",
            "amount": 2**63,
            "open_signature_b64": TOKEN,
        },
        422,
        "validation_error",
        "amount",
    ),
    (
        "issuer",
        "/channels/payword",
        {
            "client_public_key_der_b64": "{client}",
            "vendor_public_key_der_b64": "{client}",
            "amount": 5,
            "open_signature_b64": TOKEN,
            "hash_alg": "md5",
        },
        422,
        "validation_error",
        None,
    ),
    (
        "issuer",
        "/channels/payword",
        {"client_public_key_der_b64": BIG},
        413,
        "payload_too_large",
        None,
    ),
    (
        "issuer",
        "/channels/payword/" + "Q" * 43 + "/settlements",
        {
            "vendor_public_key_der_b64": TOKEN,
            "k": 1,
            "token_b64": TOKEN,
            "vendor_signature_b64": TOKEN,
        },
        404,
        "channel_not_found",
        None,
    ),
    (
        "issuer",
        "/channels/payword/{pw}/settlements",
        {
            "vendor_public_key_der_b64": TOKEN,
            "k": "1",
            "token_b64": TOKEN,
            "vendor_signature_b64": TOKEN,
        },
        422,
        "validation_error",
        "k",
    ),
]


@pytest.fixture(scope="module")
def channels(stack: Stack) -> dict[str, Any]:
    """One client with payword, paytree and signature channels, each with one accepted payment."""
    client = stack.client()
    opened = {
        "pw": stack.open("payword", client, amount=640, max_index=64),
        "pt": stack.open("paytree", client, amount=640, max_index=64),
        "sg": stack.open("signature", client, amount=640),
    }
    accepted = {}
    for name, channel in opened.items():
        reply = stack.pay(channel, 10 if name == "sg" else 1)
        assert reply.status_code == 201, reply.text
        accepted[name] = reply.json()
    return {"client": client, "opened": opened, "accepted": accepted}


def _fill(value: Any, names: dict[str, str]) -> Any:
    if isinstance(value, str):
        for name, text in names.items():
            value = value.replace("{" + name + "}", text)
        return value
    if isinstance(value, dict):
        return {k: _fill(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, names) for v in value]
    return value


@pytest.mark.parametrize(("service", "path", "body", "status", "code", "member"), ROWS)
def test_malformed_row(
    stack: Stack,
    channels: dict[str, Any],
    service: str,
    path: str,
    body: Any,
    status: int,
    code: str,
    member: str | None,
) -> None:
    opened = channels["opened"]
    names = {name: channel.channel_id for name, channel in opened.items()}
    names["client"] = channels["client"].pk
    url = (
        stack.vendor_url + "/api/v1/vendor"
        if service == "vendor"
        else stack.issuer_url + "/api/v1/issuer"
    )
    url += _fill(path, names)
    headers = {"content-type": "application/json", **(ADMIN if "deposits" in path else {})}
    content = (
        body
        if isinstance(body, bytes)
        else httpx.Request("POST", url, json=_fill(body, names)).content
    )
    reply = httpx.post(url, content=content, headers=headers)
    assert reply.status_code == status, reply.text
    answer = reply.json()
    assert set(answer) <= {"detail", "code", "errors"} and answer["detail"]
    assert answer["code"] == code, answer
    if member is not None:
        assert any(member in error["field"] for error in answer["errors"]), answer

    # No state changed: balances as after opening, every accepted payment still the accepted one.
    assert stack.balance(channels["client"].pk) == 1_000_000 - 3 * 640
    for name, channel in opened.items():
        replay = stack.pay(channel, 10 if name == "sg" else 1)
        assert replay.status_code == 200, replay.text
        assert replay.json() == channels["accepted"][name]
        assert stack.read(channel)["is_closed"] is False
