"""SPEC §3, §4.3, §4.4: opening channels and the issuer's channel views, on the pure functions.

Registration, balance and commitment-root reuse are decided atomically by the
store and are tested with the store adapters, not here.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from nanomoni import crypto, wire
from nanomoni.encoding import b64encode, b64url_nopad
from nanomoni.errors import Code, NanoMoniError
from nanomoni.protocol.model import ChannelState, ChannelTerms, Closure, IssuerChannel, Mode
from nanomoni.protocol.modes import RULES
from nanomoni.protocol.opening import open_channel_terms

NOW = "2026-11-30T01:00:00.000000+00:00"
SALT = bytes(range(32))
UUID = "7f6c3a52-2f43-4c5e-9a55-0c3a0f4c1d11"
ROOT = hashlib.sha256(b"root").digest()
# The three open members (root, unit value, max index) of each committed mode.
MEMBERS = {mode: r.members.names for mode, r in RULES.items() if r.members is not None}


def request_fields(
    mode: Mode,
    client: crypto.SigningKey,
    vendor: crypto.SigningKey,
    *,
    amount: int = 1000,
    unit: int | None = 2,
    max_index: int | None = 100,
    root_b64: str | None = None,
    hash_alg: str | None = None,
) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "client_public_key_der_b64": b64encode(client.public_key_der),
        "vendor_public_key_der_b64": b64encode(vendor.public_key_der),
        "amount": amount,
    }
    if hash_alg is not None:
        fields["hash_alg"] = hash_alg
    if mode in MEMBERS:
        root_name, unit_name, max_name = MEMBERS[mode]
        fields[root_name] = root_b64 if root_b64 is not None else b64encode(ROOT)
        fields[unit_name] = unit
        fields[max_name] = max_index
    return {name: value for name, value in fields.items() if value is not None}


def body(fields: dict[str, Any], signature_b64: str) -> bytes:
    return json.dumps({**fields, "open_signature_b64": signature_b64}).encode()


def signed(fields: dict[str, Any], signer: crypto.SigningKey) -> bytes:
    """Sign exactly as SPEC §1 describes it (json.dumps, sorted keys, no spaces)."""
    message = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
    return body(fields, b64encode(signer.sign(message)))


def signature_of(raw: bytes) -> str:
    return str(json.loads(raw)["open_signature_b64"])


def open_terms(mode: Mode, raw: bytes, **kwargs: Any) -> ChannelTerms:
    """The open body decoded at the edge, then judged by the rules."""
    request = wire.decode_open(raw)
    return open_channel_terms(
        RULES[mode], request, salt=SALT, channel_uuid=UUID, created_at=NOW, **kwargs
    )


def refused(code: Code, mode: Mode, req: bytes, **kwargs: Any) -> str:
    with pytest.raises(NanoMoniError) as caught:
        open_terms(mode, req, **kwargs)
    assert caught.value.code == code, caught.value.detail
    return caught.value.detail


@pytest.fixture(scope="module")
def client() -> crypto.SigningKey:
    return crypto.SigningKey.generate("p256")


@pytest.fixture(scope="module")
def vendor() -> crypto.SigningKey:
    return crypto.SigningKey.generate("ed25519")


@pytest.mark.parametrize("mode", list(Mode))
@pytest.mark.parametrize("kind", crypto.KEY_KINDS)
def test_valid_open_gives_the_terms(mode: Mode, kind: str, vendor: crypto.SigningKey) -> None:
    client = crypto.SigningKey.generate(kind)
    req = signed(request_fields(mode, client, vendor, amount=500, unit=5, max_index=100), client)
    terms = open_terms(mode, req)
    expected_id = b64url_nopad(
        hashlib.sha256(client.public_key_der + vendor.public_key_der + SALT).digest()
    )
    assert terms.channel_id == expected_id and len(terms.channel_id) == 43
    assert terms.id == UUID and terms.created_at == NOW and terms.mode == mode
    assert terms.salt_b64 == b64encode(SALT)
    assert terms.amount == 500 and terms.hash_alg == "sha256"
    assert terms.client_public_key_der_b64 == b64encode(client.public_key_der)
    assert terms.vendor_public_key_der_b64 == b64encode(vendor.public_key_der)
    if mode == Mode.signature:
        assert (terms.root, terms.unit_value, terms.max_index) == (None, None, None)
    else:
        assert (terms.root, terms.unit_value, terms.max_index) == (ROOT, 5, 100)


def test_blake3_channel_is_signed_echoed_and_its_id_still_uses_sha256(
    client: crypto.SigningKey, vendor: crypto.SigningKey
) -> None:
    req = signed(request_fields(Mode.payword, client, vendor, hash_alg="blake3"), client)
    terms = open_terms(Mode.payword, req)
    assert terms.hash_alg == "blake3"
    assert terms.channel_id == b64url_nopad(
        hashlib.sha256(client.public_key_der + vendor.public_key_der + SALT).digest()
    )
    # hash_alg is part of the signed bytes: dropping it after signing breaks the signature.
    fields = request_fields(Mode.payword, client, vendor, hash_alg="blake3")
    stripped = body({k: v for k, v in fields.items() if k != "hash_alg"}, signature_of(req))
    refused(Code.invalid_signature, Mode.payword, stripped)


def test_unknown_hash_alg_is_a_validation_error(
    client: crypto.SigningKey, vendor: crypto.SigningKey
) -> None:
    req = signed(request_fields(Mode.paytree, client, vendor, hash_alg="md5"), client)
    assert "hash_alg" in refused(Code.validation_error, Mode.paytree, req)


@pytest.mark.parametrize("which", ["client_public_key_der_b64", "vendor_public_key_der_b64"])
@pytest.mark.parametrize("bad", ["not*base64", "QUJD", b64encode(b"\x30\x03\x02\x01\x01")])
def test_bad_public_keys_are_invalid_encoding(
    which: str, bad: str, client: crypto.SigningKey, vendor: crypto.SigningKey
) -> None:
    fields = request_fields(Mode.signature, client, vendor)
    fields[which] = bad
    assert which in refused(Code.invalid_encoding, Mode.signature, signed(fields, client))


def test_well_formed_keys_of_unsupported_types_are_invalid_encoding(
    client: crypto.SigningKey, vendor: crypto.SigningKey
) -> None:
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key()
    der = p384.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    fields = request_fields(Mode.signature, client, vendor)
    fields["vendor_public_key_der_b64"] = b64encode(der)
    assert "supported" in refused(Code.invalid_encoding, Mode.signature, signed(fields, client))


def test_signature_by_another_key_than_the_claimed_client_is_refused(
    client: crypto.SigningKey, vendor: crypto.SigningKey
) -> None:
    impostor = crypto.SigningKey.generate("secp256k1")
    req = signed(request_fields(Mode.paytree, client, vendor), impostor)
    assert "signature" in refused(Code.invalid_signature, Mode.paytree, req)


def test_member_changed_after_signing_is_refused(
    client: crypto.SigningKey, vendor: crypto.SigningKey
) -> None:
    req = signed(request_fields(Mode.payword, client, vendor, amount=1000), client)
    fields = request_fields(Mode.payword, client, vendor, amount=1001)
    tampered = body(fields, signature_of(req))
    assert "signature" in refused(Code.invalid_signature, Mode.payword, tampered)


def test_undecodable_open_signature_is_invalid_encoding(
    client: crypto.SigningKey, vendor: crypto.SigningKey
) -> None:
    fields = request_fields(Mode.signature, client, vendor)
    req = body(fields, "%%%")
    refused(Code.invalid_encoding, Mode.signature, req)


@pytest.mark.parametrize("mode", list(Mode))
def test_amount_below_one_is_invalid_amount(
    mode: Mode, client: crypto.SigningKey, vendor: crypto.SigningKey
) -> None:
    req = signed(request_fields(mode, client, vendor, amount=0, unit=1, max_index=1), client)
    assert "amount" in refused(Code.invalid_amount, mode, req)


@pytest.mark.parametrize("mode", list(MEMBERS))
@pytest.mark.parametrize("position", [0, 1, 2])
def test_missing_mode_member_is_missing_field(
    mode: Mode, position: int, client: crypto.SigningKey, vendor: crypto.SigningKey
) -> None:
    fields = request_fields(mode, client, vendor)
    name = MEMBERS[mode][position]
    del fields[name]
    assert name in refused(Code.missing_field, mode, signed(fields, client))


@pytest.mark.parametrize("path_mode", list(Mode))
def test_members_of_another_mode_are_mode_mismatch(
    path_mode: Mode, client: crypto.SigningKey, vendor: crypto.SigningKey
) -> None:
    # SPEC §4.3 [v1.1]: a body signed for one mode cannot open a channel of another.
    body_mode = Mode.paytree if path_mode is not Mode.paytree else Mode.payword
    fields = request_fields(body_mode, client, vendor)
    detail = refused(Code.mode_mismatch, path_mode, signed(fields, client))
    assert MEMBERS[body_mode][0] in detail
    # Checked before the signature: even a forged body gets mode_mismatch.
    impostor = crypto.SigningKey.generate("p256")
    refused(Code.mode_mismatch, path_mode, signed(fields, impostor))


@pytest.mark.parametrize("mode", list(MEMBERS))
@pytest.mark.parametrize(("unit", "max_index"), [(0, 10), (1, 0), (0, 0)])
def test_unit_and_max_below_one_are_invalid_amount(
    mode: Mode, unit: int, max_index: int, client: crypto.SigningKey, vendor: crypto.SigningKey
) -> None:
    req = signed(request_fields(mode, client, vendor, unit=unit, max_index=max_index), client)
    refused(Code.invalid_amount, mode, req)


@pytest.mark.parametrize("mode", list(MEMBERS))
def test_max_times_unit_above_amount_is_exceeds_amount(
    mode: Mode, client: crypto.SigningKey, vendor: crypto.SigningKey
) -> None:
    at_limit = signed(
        request_fields(mode, client, vendor, amount=300, unit=3, max_index=100), client
    )
    assert open_terms(mode, at_limit).max_index == 100
    over = signed(request_fields(mode, client, vendor, amount=299, unit=3, max_index=100), client)
    assert "exceeds" in refused(Code.exceeds_amount, mode, over)


def test_max_times_unit_is_exact_beyond_64_bits(
    client: crypto.SigningKey, vendor: crypto.SigningKey
) -> None:
    # 2**62 × 4 = 2**64 would wrap to 0 in 64-bit arithmetic and pass.
    req = signed(
        request_fields(Mode.payword, client, vendor, amount=2**63 - 1, unit=2**62, max_index=4),
        client,
    )
    refused(Code.exceeds_amount, Mode.payword, req)


@pytest.mark.parametrize("mode", list(MEMBERS))
def test_max_above_the_cap_is_exceeds_max(
    mode: Mode, client: crypto.SigningKey, vendor: crypto.SigningKey
) -> None:
    over_default = signed(
        request_fields(mode, client, vendor, amount=2**25, unit=1, max_index=2**24 + 1), client
    )
    assert "exceeds" in refused(Code.exceeds_max, mode, over_default)
    req = signed(request_fields(mode, client, vendor, amount=100, unit=1, max_index=100), client)
    refused(Code.exceeds_max, mode, req, max_index_cap=99)
    assert open_terms(mode, req, max_index_cap=100).max_index == 100


@pytest.mark.parametrize("mode", list(MEMBERS))
@pytest.mark.parametrize("root_b64", [b64encode(bytes(31)), b64encode(bytes(33)), "AAAA=AAA", ""])
def test_root_not_32_bytes_is_invalid_encoding(
    mode: Mode, root_b64: str, client: crypto.SigningKey, vendor: crypto.SigningKey
) -> None:
    req = signed(request_fields(mode, client, vendor, root_b64=root_b64), client)
    assert MEMBERS[mode][0] in refused(Code.invalid_encoding, mode, req)


def test_checks_run_in_spec_order(client: crypto.SigningKey, vendor: crypto.SigningKey) -> None:
    # Bad signature wins over every later rule; amount before mode members.
    everything_wrong = request_fields(Mode.paytree, client, vendor, amount=0, unit=0)
    del everything_wrong["paytree_root_b64"]
    impostor = crypto.SigningKey.generate("p256")
    refused(Code.invalid_signature, Mode.paytree, signed(everything_wrong, impostor))
    refused(Code.invalid_amount, Mode.paytree, signed(everything_wrong, client))


def test_same_request_with_another_salt_is_another_channel(
    client: crypto.SigningKey, vendor: crypto.SigningKey
) -> None:
    req = signed(request_fields(Mode.signature, client, vendor), client)
    first = open_terms(Mode.signature, req)
    second = open_channel_terms(
        RULES[Mode.signature],
        wire.decode_open(req),
        salt=os.urandom(32),
        channel_uuid=UUID,
        created_at=NOW,
    )
    assert first.channel_id != second.channel_id


# --- channel views (§4.3 response, §4.4) -----------------------------------------------

EXPIRES_AT = 1_900_000_000_123_456  # µs since the epoch
EXPIRES_ISO = "2030-03-17T17:46:40.123456+00:00"
OPEN_MEMBERS = {
    "channel_id",
    "client_public_key_der_b64",
    "vendor_public_key_der_b64",
    "salt_b64",
    "amount",
    "balance",
    "hash_alg",
    "state",  # [v1.1]
    "expires_at",
}


def set_members(view: dict[str, Any]) -> set[str]:
    return {name for name, value in view.items() if value is not None}


@pytest.mark.parametrize("mode", list(Mode))
def test_open_view_has_only_the_open_members(
    mode: Mode, client: crypto.SigningKey, vendor: crypto.SigningKey
) -> None:
    terms = open_terms(mode, signed(request_fields(mode, client, vendor), client))
    opened = msgspec.structs.replace(terms, expires_at=EXPIRES_AT)
    view = wire.channel_view(RULES[mode], IssuerChannel(terms=opened), opened=True)
    assert set(view) == OPEN_MEMBERS | set(MEMBERS.get(mode, ()))
    assert view["balance"] == 0 and view["amount"] == 1000
    assert view["state"] == "open" and view["expires_at"] == EXPIRES_ISO
    assert view["channel_id"] == terms.channel_id
    if mode in MEMBERS:
        root_name, unit_name, max_name = MEMBERS[mode]
        assert view[root_name] == b64encode(ROOT)
        assert (view[unit_name], view[max_name]) == (2, 100)


@pytest.mark.parametrize("mode", list(Mode))
def test_read_view_of_an_open_channel(
    mode: Mode, client: crypto.SigningKey, vendor: crypto.SigningKey
) -> None:
    terms = open_terms(mode, signed(request_fields(mode, client, vendor), client))
    opened = msgspec.structs.replace(terms, expires_at=EXPIRES_AT)
    view = wire.channel_view(RULES[mode], IssuerChannel(terms=opened), opened=False)
    assert set_members(view) == OPEN_MEMBERS | set(MEMBERS.get(mode, ())) | {
        "id",
        "is_closed",
        "created_at",
        "vendor_credited",
        "receipts",
    }
    assert view["id"] == UUID and view["is_closed"] is False and view["created_at"] == NOW
    assert view["balance"] == 0 and view["closed_at"] is None
    assert view["dispute_deadline"] is None and view["vendor_credited"] == 0
    if mode is Mode.signature:
        assert view["close_payload_b64"] is None and view["client_close_signature_b64"] is None


def test_read_view_of_a_settled_signature_channel(
    client: crypto.SigningKey, vendor: crypto.SigningKey
) -> None:
    terms = open_terms(
        Mode.signature, signed(request_fields(Mode.signature, client, vendor), client)
    )
    closure = Closure(
        owed=321,
        proof_digest=bytes(32),
        client_balance=679,
        vendor_balance=321,
        closed_at="2026-11-30T02:00:00+00:00",
        close_payload_b64="cGF5bG9hZA==",
        client_close_signature_b64="Y2xpZW50",
        vendor_close_signature_b64="dmVuZG9y",
    )
    settled = IssuerChannel(
        terms=terms, closure=closure, state=ChannelState.closed, vendor_credited=321
    )
    view = wire.channel_view(RULES[Mode.signature], settled, opened=False)
    assert view["is_closed"] is True and view["balance"] == 321 and view["state"] == "closed"
    assert view["closed_at"] == "2026-11-30T02:00:00+00:00"
    assert view["close_payload_b64"] == "cGF5bG9hZA=="
    assert view["client_close_signature_b64"] == "Y2xpZW50"
    assert view["vendor_close_signature_b64"] == "dmVuZG9y"
