"""Every route the vendor serves (SPEC §5, §12), for its OpenAPI document.

The codes are those each handler and the protocol and store steps it calls can
raise; tests/unit/test_openapi.py checks this table against the app's routes
(the Litestar ones and those the hot path answers).
"""

from __future__ import annotations

from nanomoni import wire
from nanomoni.errors import Code
from nanomoni.openapi import Operation, Schema, ref
from nanomoni.protocol.modes import ALL

PREFIX = "/api/v1/vendor"
CHANNEL = f"{PREFIX}/channels/{{mode}}/{{channel_id}}"
BATCH_PATH = f"{PREFIX}/payments/batch"
STREAM_PATH = f"{PREFIX}/payments/stream"
PAYMENT_BODIES = tuple(dict.fromkeys(wire.payment_body_type(rules) for rules in ALL))

# msgspec does not describe a list of an untagged union of structs: written out here.
BATCH_RESPONSE = Schema(
    "BatchResponse",
    {
        "title": "BatchResponse",
        "description": "One result per item, in order: the item's 201/200 answer, or its "
        "refusal (status, detail, code) as it would get it alone.",
        "type": "object",
        "properties": {
            "results": {
                "type": "array",
                "items": {"anyOf": [ref(wire.ItemAccepted), ref(wire.ItemRefused)]},
            }
        },
        "required": ["results"],
    },
    (wire.ItemAccepted, wire.ItemRefused),
)

# What a channel the vendor learns from the issuer can be refused with.
_CHANNEL = (
    Code.channel_not_found,  # an unknown mode or id (also at the issuer)
    Code.issuer_unavailable,
    Code.store_unavailable,
)

OPERATIONS = (
    Operation(
        "GET",
        "/health",
        "Whether the vendor, its store and its registration at the issuer are ready "
        "(503 degraded until they are).",
        {200: wire.HealthResponse, 503: wire.HealthDegraded},
        errors=(Code.store_unavailable, Code.issuer_unavailable),
    ),
    Operation(
        "GET",
        f"{PREFIX}/keys/public",
        "The vendor's public key (channels are opened toward it).",
        {200: wire.VendorKeyResponse},
    ),
    Operation(
        "POST",
        f"{CHANNEL}/payments",
        "Pay in a channel: 201 a newly accepted payment, 200 an exact replay of the "
        "accepted one (the body is the path mode's).",
        {201: wire.PaymentResponse, 200: wire.PaymentResponse},
        request=PAYMENT_BODIES,
        errors=(
            *_CHANNEL,
            Code.invalid_encoding,
            Code.mode_mismatch,
            Code.id_mismatch,
            Code.wrong_vendor,
            Code.channel_closed,
            Code.invalid_amount,
            Code.duplicate_mismatch,
            Code.non_monotonic,
            Code.exceeds_max,
            Code.exceeds_amount,
            Code.invalid_signature,
            Code.invalid_proof,
            Code.rate_limited,
        ),
    ),
    Operation(
        "POST",
        BATCH_PATH,
        "Many payments in one request: each item judged as if POSTed alone, in order.",
        {200: BATCH_RESPONSE},
        request=wire.BatchRequest,
    ),
    Operation(
        "POST",
        f"{CHANNEL}/closure-requests",
        "Settle the channel at the issuer with the best payment accepted (asked by its "
        "client's signature in the body, or by the operator's admin token).",
        {204: None},
        request=wire.ClosureRequest,
        security=["admin", ""],
        errors=(
            *_CHANNEL,
            Code.invalid_encoding,
            Code.id_mismatch,
            Code.unauthorized,
            Code.no_payments,
            Code.settlement_failed,
        ),
    ),
)

# WebSockets, which OpenAPI cannot describe (listed under `x-websockets`).
STREAMS = {
    STREAM_PATH: "Each text frame a batch body (or one payment); each answered by one "
    "frame of results, in order; a frame that is not one gets an error frame.",
}
