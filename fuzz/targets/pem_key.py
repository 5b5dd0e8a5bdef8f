"""crypto.SigningKey.from_pem on arbitrary bytes (a Python-level target: the PEM
wrapping is Python, the key inside goes to the core): it loads, or raises
ValueError, and a loaded key survives to_pem / from_pem unchanged."""

from __future__ import annotations

import reference

from nanomoni import crypto

MAX_LEN = 600


def test_one_input(data: bytes) -> None:
    try:
        key = crypto.SigningKey.from_pem(data)
    except ValueError:
        return
    again = crypto.SigningKey.from_pem(key.to_pem())
    assert again.private_key_der == key.private_key_der
    assert again.public_key_der == key.public_key_der and again.kind == key.kind


def seeds() -> dict[str, bytes]:
    out = {}
    for kind, private in reference.fixed_keys().items():
        pem = crypto.SigningKey(reference.pkcs8(private)).to_pem()
        out[kind] = pem
        out[f"{kind}-crlf"] = pem.replace(b"\n", b"\r\n")
    out["empty-body"] = b"-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n"
    return out
