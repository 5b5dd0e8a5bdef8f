"""Every route the issuer serves (SPEC §4), for its OpenAPI document.

The codes are those each handler and the protocol and store steps it calls can
raise; tests/unit/test_openapi.py checks this table against the app's routes.
"""

from __future__ import annotations

from nanomoni import wire
from nanomoni.errors import Code
from nanomoni.openapi import Operation
from nanomoni.protocol.audit import Stats
from nanomoni.protocol.modes import ALL

PREFIX = "/api/v1/issuer"
CHANNEL = f"{PREFIX}/channels/{{mode}}/{{channel_id}}"
SETTLEMENT_BODIES = tuple(dict.fromkeys(wire.settlement_body_type(rules) for rules in ALL))

# A channel named by the path: an unknown mode or id, or one of another mode, is a 404.
_CHANNEL = (Code.channel_not_found, Code.store_unavailable)
_SIGNED_BY_CLIENT = (Code.invalid_encoding, Code.id_mismatch, Code.unauthorized)

OPERATIONS = (
    Operation(
        "GET",
        "/health",
        "Whether the issuer and its store answer (503 degraded while the store does not).",
        {200: wire.HealthResponse, 503: wire.HealthDegraded},
        errors=(Code.store_unavailable,),
    ),
    Operation(
        "POST",
        f"{PREFIX}/accounts",
        "Register a public key: its account with the initial balance (idempotent).",
        {201: wire.AccountResponse},
        request=wire.RegisterRequest,
        errors=(Code.invalid_encoding, Code.store_unavailable),
    ),
    Operation(
        "GET",
        f"{PREFIX}/accounts",
        "An account's balance.",
        {200: wire.AccountResponse},
        query=[("public_key_der_b64", "the account's public key, DER, base64")],
        errors=(Code.account_not_found, Code.store_unavailable),
    ),
    Operation(
        "POST",
        f"{PREFIX}/accounts/deposits",
        "Credit an account (operator only: the admin bearer token).",
        {200: wire.AccountResponse},
        request=wire.DepositRequest,
        security=["admin"],
        errors=(
            Code.unauthorized,
            Code.forbidden,
            Code.invalid_amount,
            Code.account_not_found,
            Code.store_unavailable,
        ),
    ),
    Operation(
        "GET",
        f"{PREFIX}/stats",
        "The operator's view of the ledger, read at one instant (admin bearer token).",
        {200: Stats},
        security=["admin"],
        errors=(Code.unauthorized, Code.forbidden, Code.store_unavailable),
    ),
    Operation(
        "GET",
        f"{PREFIX}/keys/public",
        "The issuer's public key (verifies receipts).",
        {200: wire.IssuerKeyResponse},
    ),
    Operation(
        "POST",
        f"{PREFIX}/channels/{{mode}}",
        "Open a channel: lock the client's funds toward one vendor (200: the same open "
        "again, answered as the first time, no second debit).",
        {201: wire.OpenedChannel, 200: wire.OpenedChannel},
        request=wire.OpenChannelRequest,
        errors=(
            Code.channel_not_found,  # an unknown mode
            Code.invalid_encoding,
            Code.invalid_signature,
            Code.mode_mismatch,
            Code.missing_field,
            Code.wrong_issuer,
            Code.invalid_ttl,
            Code.invalid_amount,
            Code.exceeds_amount,
            Code.exceeds_max,
            Code.not_registered,
            Code.insufficient_balance,
            Code.commitment_reused,
            Code.store_unavailable,
        ),
    ),
    Operation(
        "GET",
        CHANNEL,
        "A channel, its state and every receipt so far.",
        {200: wire.ChannelView},
        errors=_CHANNEL,
    ),
    Operation(
        "POST",
        f"{CHANNEL}/settlements",
        "Settle (or checkpoint, `final: false`) a channel with the vendor's best proof; "
        "the same settlement again answers the same (the body is the path mode's).",
        {200: wire.SettlementResponse},
        request=SETTLEMENT_BODIES,
        errors=(
            *_CHANNEL,
            Code.invalid_encoding,
            Code.mode_mismatch,
            Code.id_mismatch,
            Code.invalid_signature,
            Code.invalid_proof,
            Code.invalid_amount,
            Code.exceeds_max,
            Code.exceeds_amount,
            Code.already_closed,
            Code.channel_closed,
        ),
    ),
    Operation(
        "POST",
        f"{CHANNEL}/client-closures",
        "The client starts the channel's dispute window (idempotent).",
        {202: wire.ChannelView},
        request=wire.ClientClosureRequest,
        errors=(*_CHANNEL, *_SIGNED_BY_CLIENT),
    ),
    Operation(
        "POST",
        f"{CHANNEL}/top-ups",
        "Raise a signature channel's amount (idempotent per nonce).",
        {200: wire.ToppedUpChannel},
        request=wire.TopUpRequest,
        errors=(
            *_CHANNEL,
            *_SIGNED_BY_CLIENT,
            Code.mode_mismatch,
            Code.invalid_amount,
            Code.duplicate_mismatch,
            Code.channel_closed,
            Code.insufficient_balance,
        ),
    ),
    Operation(
        "GET",
        f"{PREFIX}/vendors/closing-channels",
        "The signing vendor's channels in their dispute window.",
        {200: wire.ClosingChannelsResponse},
        security=["signed"],
        # The signature covers the body, so it is read (and may be too large).
        errors=(Code.unauthorized, Code.payload_too_large, Code.store_unavailable),
    ),
)
