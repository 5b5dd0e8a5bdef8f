"""Requests signed by a party (SPEC §4.7 [v1.1]): a read that acts for a key.

    Authorization: NanoMoni key=<DER b64>, ts=<unix seconds>, sig=<b64>

`sig` signs canonical {"method", "path", "ts", "body_sha256_b64"}: the request
target exactly as sent (path with its /api/v1 prefix, plus ?query), the time, and
the raw body's hash; the server takes it within ±300 s of its own clock.
"""

from __future__ import annotations

from nanomoni import crypto
from nanomoni.encoding import b64decode, b64encode, canonical_json
from nanomoni.errors import Code, NanoMoniError
from nanomoni.protocol.modes import Signer

SCHEME = "NanoMoni"
MAX_SKEW_S = 300


def request_message(method: str, target: str, ts: int, body: bytes) -> bytes:
    digest = b64encode(crypto.digest(body, "sha256"))
    return canonical_json({"method": method, "path": target, "ts": ts, "body_sha256_b64": digest})


def authorization(key: Signer, method: str, target: str, body: bytes, ts: int) -> str:
    """The header value that signs this request with `key` at unix time `ts`."""
    signature = key.sign(request_message(method, target, ts, body))
    return f"{SCHEME} key={b64encode(key.public_key_der)}, ts={ts}, sig={b64encode(signature)}"


def _refused(why: str) -> NanoMoniError:
    return NanoMoniError(Code.unauthorized, f"this request needs a valid {SCHEME} signature: {why}")


def _parameters(header: str) -> dict[str, str]:
    scheme, _, rest = header.partition(" ")
    if scheme != SCHEME:
        raise _refused(f"the Authorization scheme is not {SCHEME}")
    found: dict[str, str] = {}
    for part in rest.split(","):
        # Split at the first '=' only: a base64 key may end in '='.
        name, equals, value = part.strip().partition("=")
        if not equals or name in found:
            raise _refused(f"malformed parameter {part.strip()!r}")
        found[name] = value
    if set(found) != {"key", "ts", "sig"}:
        raise _refused("the parameters must be key, ts and sig")
    return found


def check_authorization(
    header: str | None, method: str, target: str, body: bytes, now_s: float
) -> str:
    """The signing party's key (base64 DER), or 401 unauthorized."""
    if header is None:
        raise _refused("no Authorization header")
    params = _parameters(header)
    ts_text = params["ts"]
    if not ts_text.isascii() or not ts_text.isdigit() or len(ts_text) > 12:
        raise _refused("ts is not unix seconds")
    ts = int(ts_text)
    if abs(now_s - ts) > MAX_SKEW_S:
        raise _refused(f"ts is more than {MAX_SKEW_S} s away from the server's clock")
    try:
        key = b64decode(params["key"], field="key")
        signature = b64decode(params["sig"], field="sig")
    except NanoMoniError as exc:
        raise _refused(exc.detail) from None
    if crypto.public_key_kind(key) is None:
        raise _refused("key is not a supported public key")
    if not crypto.verify_signature(key, request_message(method, target, ts, body), signature):
        raise _refused("sig does not verify for this method, path, time and body")
    return params["key"]
