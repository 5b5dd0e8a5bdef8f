"""One error type for every layer, carrying a SPEC §6 code; mapped to HTTP once."""

from __future__ import annotations

from enum import StrEnum


class Code(StrEnum):
    invalid_encoding = "invalid_encoding"
    invalid_signature = "invalid_signature"
    not_registered = "not_registered"
    invalid_amount = "invalid_amount"
    insufficient_balance = "insufficient_balance"
    missing_field = "missing_field"
    exceeds_amount = "exceeds_amount"
    exceeds_max = "exceeds_max"
    commitment_reused = "commitment_reused"
    already_closed = "already_closed"
    channel_closed = "channel_closed"
    wrong_vendor = "wrong_vendor"
    non_monotonic = "non_monotonic"
    invalid_proof = "invalid_proof"
    duplicate_mismatch = "duplicate_mismatch"
    id_mismatch = "id_mismatch"
    no_payments = "no_payments"
    mode_mismatch = "mode_mismatch"
    channel_not_found = "channel_not_found"
    account_not_found = "account_not_found"
    unauthorized = "unauthorized"
    forbidden = "forbidden"
    validation_error = "validation_error"
    payload_too_large = "payload_too_large"
    settlement_failed = "settlement_failed"
    issuer_unavailable = "issuer_unavailable"
    internal_error = "internal_error"
    # v1.1
    not_found = "not_found"
    wrong_issuer = "wrong_issuer"
    invalid_ttl = "invalid_ttl"
    payment_required = "payment_required"
    insufficient_credit = "insufficient_credit"
    rate_limited = "rate_limited"
    store_unavailable = "store_unavailable"
    service_busy = "service_busy"  # a worker at its connection cap (SPEC §7)


_STATUS: dict[Code, int] = {
    Code.channel_not_found: 404,
    Code.account_not_found: 404,
    Code.not_found: 404,
    Code.payment_required: 402,
    Code.insufficient_credit: 402,
    Code.rate_limited: 429,
    Code.store_unavailable: 503,
    Code.service_busy: 503,
    Code.unauthorized: 401,
    Code.forbidden: 403,
    Code.validation_error: 422,
    Code.payload_too_large: 413,
    Code.settlement_failed: 502,
    Code.issuer_unavailable: 503,
    Code.internal_error: 500,
}


def http_status(code: Code) -> int:
    """The HTTP status of a code: 400 unless listed."""
    return _STATUS.get(code, 400)


class StartupError(Exception):
    """A service cannot start: `nanomoni <command>: <what>: <why>`, one line, exit 1."""


class NanoMoniError(Exception):
    """A refusal with a SPEC code and a human sentence."""

    def __init__(self, code: Code, detail: str, *, retry_after: int | None = None) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.retry_after = retry_after  # seconds, sent as Retry-After (429, 503)

    @property
    def status(self) -> int:
        return http_status(self.code)

    def __repr__(self) -> str:
        return f"NanoMoniError({self.code.value!r}, {self.detail!r})"
