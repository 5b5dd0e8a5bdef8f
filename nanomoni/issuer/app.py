"""The issuer service (SPEC §4): accounts, channel opening, reading and settlement, and
the client's protection (§4.6): client closes, top-ups, the vendors' closing lists,
finalization at the dispute deadline, signed receipts.

Handlers only translate: decode → protocol check → one atomic store step → response.
A background task per worker finalizes channels whose deadline passed (the store
decides atomically, so any number of workers may run it).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import logging
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from litestar import Litestar, Request, Response, get, post

from nanomoni import config, crypto, encoding, metrics, wire
from nanomoni.errors import Code, NanoMoniError
from nanomoni.http import build_app, json_response
from nanomoni.issuer.operations import OPERATIONS, PREFIX
from nanomoni.protocol.audit import (
    ISSUER_CHECKS,
    Finding,
    Ledger,
    Stats,
    audit_ledger,
    ledger_stats,
)
from nanomoni.protocol.consent import CLIENT_CLOSE, check_consent
from nanomoni.protocol.lifecycle import (
    check_top_up,
    iso_from_us,
    receipt_message,
    require_top_up,
    seconds_to_us,
    top_up_digest,
)
from nanomoni.protocol.model import IssuerChannel, Receipt, SignedReceipt
from nanomoni.protocol.modes import AnyRules, rules_for
from nanomoni.protocol.opening import open_channel_terms
from nanomoni.protocol.payments import require_mode
from nanomoni.protocol.settlement import check_settlement, is_final
from nanomoni.protocol.signed_requests import check_authorization
from nanomoni.serve import load_or_create_key
from nanomoni.store import StoreUnavailable, open_issuer_store, store_url
from nanomoni.store.base import IssuerStore
from nanomoni.wire import decode

log = logging.getLogger("nanomoni.issuer")


@dataclass(frozen=True, kw_only=True)
class IssuerConfig:
    data_dir: Path
    store: str | None = None  # default: sqlite file in data_dir
    key_file: Path | None = None  # default: issuer-key.pem in data_dir
    initial_balance: int = config.INITIAL_BALANCE
    admin_token: str | None = None
    max_body: int = config.MAX_BODY
    max_index: int = config.MAX_INDEX
    dispute_window: float = config.DISPUTE_WINDOW  # seconds
    min_channel_ttl: float = config.MIN_CHANNEL_TTL
    max_channel_ttl: float = config.MAX_CHANNEL_TTL
    finalize_interval: float = config.FINALIZE_INTERVAL
    audit_interval: float = config.AUDIT_INTERVAL  # 0: no periodic audit
    stats_interval: float = config.STATS_INTERVAL

    @property
    def store_url(self) -> str:
        return store_url(self.store, self.data_dir / "issuer.sqlite3")

    @property
    def key_path(self) -> Path:
        return self.key_file or self.data_dir / "issuer-key.pem"


class Issuer:
    """One worker's state: the store connection and the issuer key."""

    def __init__(self, config: IssuerConfig) -> None:
        self.config = config
        self.key = load_or_create_key(config.key_path)
        self.public_key_b64 = encoding.b64encode(self.key.public_key_der)
        self._store: IssuerStore | None = None
        # Whole-ledger reads (stats, audit) take longer than one transition's deadline.
        self._ledger_store: IssuerStore | None = None
        self._finalizer: asyncio.Task[None] | None = None
        self._observer: asyncio.Task[None] | None = None
        self._dispute_window_us = seconds_to_us(config.dispute_window)
        # A receipt's content never changes: views list a channel's receipts again and
        # again, so each is signed once per worker (any valid signature will do).
        self._sign = functools.lru_cache(maxsize=65536)(self.key.sign)

    @property
    def store(self) -> IssuerStore:
        if self._store is None:
            raise RuntimeError("issuer store used before start-up")
        return self._store

    async def start(self) -> None:
        self._store = await open_issuer_store(self.config.store_url)
        self._ledger_store = await open_issuer_store(
            self.config.store_url, timeout=config.LEDGER_READ_TIMEOUT
        )
        self._finalizer = asyncio.create_task(self._finalize_forever())
        metrics.declare_audit(ISSUER_CHECKS)
        self._observer = asyncio.create_task(self._observe_forever())

    async def stop(self) -> None:
        for task in (self._finalizer, self._observer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._finalizer = self._observer = None
        for store in (self._store, self._ledger_store):
            if store is not None:
                await store.close()
        self._store = self._ledger_store = None

    async def _finalize_forever(self) -> None:
        """SPEC §4.6: close every channel whose dispute deadline passed (and start the
        window of every channel past its expiry), in bounded store steps."""
        while True:
            try:
                await self.finalize_due()
            except StoreUnavailable as exc:
                log.warning("finalization sweep: store unavailable: %s", exc.reason)
            except Exception:  # the sweep must outlive any one failure
                log.exception("finalization sweep failed")
            await asyncio.sleep(self.config.finalize_interval)

    async def finalize_due(self) -> int:
        """One sweep: what is due now, all of it; then the overdue gauge. (Not timed in
        the store histogram: a sweep runs every second, whatever the traffic.)"""
        batch, total = config.FINALIZE_BATCH, 0
        while True:
            done = await self.store.finalize_due(batch)
            total += done
            if done < batch:
                break
        metrics.closing_overdue(await self.store.overdue())
        return total

    # --- the operator's view: stats and the periodic audit (issue 15) ----------------

    async def _observe_forever(self) -> None:
        """Refresh the ledger gauges now and every stats interval; audit the same read
        every audit interval (the first audit one interval after start)."""
        interval = self.config.audit_interval
        next_audit = time.monotonic() + interval
        while True:
            audit = interval > 0 and time.monotonic() >= next_audit
            try:
                await self.observe(audit=audit)
            except StoreUnavailable as exc:
                log.warning("ledger stats: store unavailable: %s", exc.reason)
            except Exception:  # the task must outlive any one failure
                log.exception("ledger stats or audit failed")
            if audit:
                next_audit = time.monotonic() + interval
            await asyncio.sleep(self.config.stats_interval)

    async def ledger(self) -> Ledger:
        if self._ledger_store is None:
            raise RuntimeError("issuer store used before start-up")
        return await self._ledger_store.ledger()

    async def observe(self, *, audit: bool) -> list[Finding]:
        """One read of the ledger: the gauges from it and, if asked, its audit (every
        check that fails is counted and logged); the audit's findings."""
        ledger = await self.ledger()
        _export(ledger_stats(ledger))
        if not audit:
            return []
        findings = audit_ledger(ledger)
        for finding in findings:
            if not finding.ok:
                metrics.audit_failed(finding.check)
                log.error("ledger audit failed: %s", finding.line())
        return findings

    async def stats(self, authorization: str | None) -> Response[bytes]:
        self._require_admin(authorization, "the ledger's stats")
        async with metrics.timed_store("ledger"):
            ledger = await self.ledger()
        stats = ledger_stats(ledger)
        _export(stats)
        return json_response(stats)

    def _require_admin(self, authorization: str | None, what: str) -> None:
        token = self.config.admin_token
        if not token:
            raise NanoMoniError(
                Code.forbidden, f"{what} are disabled: the issuer has no admin token"
            )
        expected = f"Bearer {token}".encode()
        if authorization is None or not hmac.compare_digest(authorization.encode(), expected):
            raise NanoMoniError(Code.unauthorized, f"{what} need the admin bearer token")

    # --- receipts -------------------------------------------------------------

    def sign_receipt(self, receipt: Receipt) -> SignedReceipt:
        return SignedReceipt(receipt=receipt, signature=self._sign(receipt_message(receipt)))

    def _receipt_members(self, receipt: Receipt) -> dict[str, Any]:
        signed = wire.SignedReceiptBody.of(self.sign_receipt(receipt))
        return {"receipt": signed.receipt, "receipt_signature_b64": signed.receipt_signature_b64}

    def _view(self, rules: AnyRules, channel: IssuerChannel) -> dict[str, Any]:
        receipts: Sequence[SignedReceipt] = [self.sign_receipt(r) for r in channel.receipts]
        return wire.channel_view(rules, channel, opened=False, receipts=receipts)

    # --- accounts -------------------------------------------------------------

    async def register(self, raw: bytes) -> Response[bytes]:
        body = decode(raw, wire.RegisterRequest)
        key = body.client_public_key_der_b64
        _require_public_key(key, "client_public_key_der_b64")
        async with metrics.timed_store("register"):
            account = await self.store.register(key, self.config.initial_balance)
        return json_response(wire.AccountResponse(account.public_key_der_b64, account.balance), 201)

    async def account(self, public_key_der_b64: str | None) -> Response[bytes]:
        if not public_key_der_b64:
            raise NanoMoniError(
                Code.validation_error, "query parameter public_key_der_b64 is required"
            )
        key = public_key_der_b64.replace(" ", "+")  # a '+' decoded as a space by the query string
        async with metrics.timed_store("get_account"):
            account = await self.store.get_account(key)
        if account is None:
            raise NanoMoniError(Code.account_not_found, "no account for this public key")
        return json_response(wire.AccountResponse(account.public_key_der_b64, account.balance))

    async def deposit(self, raw: bytes, authorization: str | None) -> Response[bytes]:
        self._require_admin(authorization, "deposits")
        body = decode(raw, wire.DepositRequest)
        if body.amount < 1:
            raise NanoMoniError(Code.invalid_amount, "deposit amount must be at least 1")
        async with metrics.timed_store("deposit"):
            account = await self.store.deposit(body.public_key_der_b64, body.amount)
        if account is None:
            raise NanoMoniError(Code.account_not_found, "no account for this public key")
        return json_response(wire.AccountResponse(account.public_key_der_b64, account.balance))

    # --- channels -------------------------------------------------------------

    async def open_channel(self, mode_segment: str, raw: bytes) -> Response[bytes]:
        rules = rules_for(mode_segment)
        request = wire.decode_open(raw)
        terms = open_channel_terms(
            rules,
            request,
            salt=os.urandom(32),
            channel_uuid=str(uuid.uuid4()),
            created_at=encoding.utc_now(),
            max_index_cap=self.config.max_index,
            issuer_key=self.public_key_b64,
            min_ttl_s=self.config.min_channel_ttl,
            max_ttl_s=self.config.max_channel_ttl,
        )
        async with metrics.timed_store("open_channel"):
            opened = await self.store.open_channel(
                terms, dispute_window_us=self._dispute_window_us
            )
        if opened.replayed:  # the same open again: its channel (as it is now), no 2nd debit
            channel = await self._channel(rules, opened.terms.channel_id)
            view = wire.channel_view(rules, channel, opened=True)
            return json_response(view | self._receipt_members(opened.receipt), 200)
        metrics.channel_opened(rules.mode.value)
        view = wire.channel_view(rules, IssuerChannel(terms=opened.terms), opened=True)
        return json_response(view | self._receipt_members(opened.receipt), 201)

    async def _channel(self, rules: AnyRules, channel_id: str) -> IssuerChannel:
        """The channel of this path's mode (another mode's does not exist here: 404)."""
        async with metrics.timed_store("get_channel"):
            channel = await self.store.get_channel(channel_id)
        if channel is None or channel.terms.mode is not rules.mode:
            raise NanoMoniError(
                Code.channel_not_found, f"no {rules.mode.value} channel with this id"
            )
        return channel

    async def read_channel(self, mode_segment: str, channel_id: str) -> Response[bytes]:
        encoding.require_channel_id(channel_id)
        rules = rules_for(mode_segment)
        return json_response(self._view(rules, await self._channel(rules, channel_id)))

    async def settle(self, mode_segment: str, channel_id: str, raw: bytes) -> Response[bytes]:
        """A final settlement, or a checkpoint (`final: false`, SPEC §4.5)."""
        encoding.require_channel_id(channel_id)
        rules = rules_for(mode_segment)
        mode = rules.mode.value
        try:
            body = wire.decode_settlement(rules, raw)
            async with metrics.timed_store("get_channel"):
                channel = await self.store.get_channel(channel_id)
            if channel is None:
                raise NanoMoniError(Code.channel_not_found, "no such channel")
            require_mode(rules, channel.terms, "settlement")
            # A PayWord settlement may hash up to max_k times: off the event loop (GIL released).
            closure = await asyncio.to_thread(
                check_settlement, rules, channel.terms, channel_id, body, now=encoding.utc_now()
            )
            async with metrics.timed_store("settle"):
                settled = await self.store.settle(channel_id, closure, final=is_final(body))
        except NanoMoniError as exc:
            metrics.settlement(mode, "rejected" if exc.status < 500 else "error")
            raise
        metrics.settlement(mode, "replay" if settled.replayed else "settled")
        signed = wire.SignedReceiptBody.of(self.sign_receipt(settled.receipt))
        response = wire.SettlementResponse(
            channel_id,
            settled.client_balance,
            settled.vendor_balance,
            signed.receipt,
            signed.receipt_signature_b64,
        )
        return json_response(response)

    # --- the client's protection (SPEC §4.6, §4.7) -----------------------------------

    async def client_close(
        self, mode_segment: str, channel_id: str, raw: bytes
    ) -> Response[bytes]:
        """The client starts the dispute window: 202 with the channel view (idempotent)."""
        encoding.require_channel_id(channel_id)
        rules = rules_for(mode_segment)
        request = wire.decode_client_closure(raw)
        if request.channel_id != channel_id:
            raise NanoMoniError(Code.id_mismatch, "body channel_id differs from the path")
        channel = await self._channel(rules, channel_id)
        assert request.client_signature is not None
        check_consent(channel.terms, CLIENT_CLOSE, request.client_signature)
        async with metrics.timed_store("client_close"):
            closing = await self.store.client_close(channel_id)
        return json_response(self._view(rules, closing), 202)

    async def top_up(self, mode_segment: str, channel_id: str, raw: bytes) -> Response[bytes]:
        """Raise a signature channel's amount (client-signed, idempotent per nonce)."""
        encoding.require_channel_id(channel_id)
        rules = rules_for(mode_segment)
        require_top_up(rules)
        request = wire.decode_top_up(raw)
        if request.channel_id != channel_id:
            raise NanoMoniError(Code.id_mismatch, "body channel_id differs from the path")
        channel = await self._channel(rules, channel_id)
        check_top_up(channel.terms, request)
        async with metrics.timed_store("top_up"):
            topped = await self.store.top_up(
                channel_id, request.amount, request.nonce, top_up_digest(request)
            )
        view = self._view(rules, topped.channel)
        return json_response(view | self._receipt_members(topped.receipt))

    async def closing_channels(
        self, target: str, raw: bytes, authorization: str | None
    ) -> Response[bytes]:
        """A vendor's channels in their dispute window, for the vendor that signed."""
        vendor = check_authorization(authorization, "GET", target, raw, time.time())
        async with metrics.timed_store("closing_channels"):
            closing = await self.store.closing_channels(vendor)
        listed = [
            wire.ClosingChannel(
                mode=channel.terms.mode.value,
                channel_id=channel.terms.channel_id,
                dispute_deadline=iso_from_us(channel.dispute_deadline),
            )
            for channel in closing.channels
        ]
        return json_response(wire.ClosingChannelsResponse(listed, iso_from_us(closing.now)))


def _export(stats: Stats) -> None:
    amounts = {
        "locked": stats.total_locked,
        "settled": stats.settled_total,
        "refunded": stats.refunded_total,
        "supply": stats.supply,
    }
    metrics.ledger(
        accounts=stats.accounts,
        channels=stats.channels,
        amounts=amounts,
        receipts=stats.receipts_issued,
    )


def request_target(request: Request[Any, Any, Any]) -> str:
    """The path and query exactly as the client sent them (what a signed request signs)."""
    scope = request.scope
    raw: bytes = scope.get("raw_path") or scope["path"].encode()
    query: bytes = scope.get("query_string", b"")
    target = raw.decode("latin-1")
    return f"{target}?{query.decode('latin-1')}" if query else target


def _require_public_key(key_b64: str, field: str) -> None:
    der = encoding.b64decode(key_b64, field=field)
    if crypto.public_key_kind(der) is None:
        raise NanoMoniError(
            Code.invalid_encoding,
            f"{field} is not a supported public key (P-256, secp256k1, Ed25519)",
        )


def create_app(config: IssuerConfig) -> Litestar:
    issuer = Issuer(config)

    @post(f"{PREFIX}/accounts")
    async def register(request: Request[Any, Any, Any]) -> Response[bytes]:
        return await issuer.register(await request.body())

    @get(f"{PREFIX}/accounts")
    async def account(public_key_der_b64: str | None = None) -> Response[bytes]:
        return await issuer.account(public_key_der_b64)

    @post(f"{PREFIX}/accounts/deposits")
    async def deposit(request: Request[Any, Any, Any]) -> Response[bytes]:
        return await issuer.deposit(await request.body(), request.headers.get("authorization"))

    @get(f"{PREFIX}/stats")
    async def stats(request: Request[Any, Any, Any]) -> Response[bytes]:
        return await issuer.stats(request.headers.get("authorization"))

    @get(f"{PREFIX}/keys/public", sync_to_thread=False)
    def public_key() -> Response[bytes]:
        return json_response(wire.IssuerKeyResponse(issuer.public_key_b64))

    @post(f"{PREFIX}/channels/{{mode:str}}")
    async def open_channel(mode: str, request: Request[Any, Any, Any]) -> Response[bytes]:
        return await issuer.open_channel(mode, await request.body())

    @get(f"{PREFIX}/channels/{{mode:str}}/{{channel_id:str}}")
    async def read_channel(mode: str, channel_id: str) -> Response[bytes]:
        return await issuer.read_channel(mode, channel_id)

    @post(f"{PREFIX}/channels/{{mode:str}}/{{channel_id:str}}/settlements")
    async def settle(
        mode: str, channel_id: str, request: Request[Any, Any, Any]
    ) -> Response[bytes]:
        return await issuer.settle(mode, channel_id, await request.body())

    @post(f"{PREFIX}/channels/{{mode:str}}/{{channel_id:str}}/client-closures")
    async def client_close(
        mode: str, channel_id: str, request: Request[Any, Any, Any]
    ) -> Response[bytes]:
        return await issuer.client_close(mode, channel_id, await request.body())

    @post(f"{PREFIX}/channels/{{mode:str}}/{{channel_id:str}}/top-ups")
    async def top_up(
        mode: str, channel_id: str, request: Request[Any, Any, Any]
    ) -> Response[bytes]:
        return await issuer.top_up(mode, channel_id, await request.body())

    @get(f"{PREFIX}/vendors/closing-channels")
    async def closing_channels(request: Request[Any, Any, Any]) -> Response[bytes]:
        return await issuer.closing_channels(
            request_target(request), await request.body(), request.headers.get("authorization")
        )

    return build_app(
        service="issuer",
        routes=[
            register,
            account,
            deposit,
            stats,
            public_key,
            open_channel,
            read_channel,
            settle,
            client_close,
            top_up,
            closing_channels,
        ],
        on_startup=[issuer.start],
        on_shutdown=[issuer.stop],
        max_body=config.max_body,
        operations=OPERATIONS,
    )
