"""The issuer service (SPEC §4): accounts, channel opening, reading and settlement.

Handlers only translate: decode → protocol check → one atomic store step → response.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from litestar import Litestar, Request, Response, get, post

from nanomoni import config, crypto, encoding, metrics, wire
from nanomoni.errors import Code, NanoMoniError
from nanomoni.http import build_app, json_response
from nanomoni.protocol.model import ChannelTerms, Closure
from nanomoni.protocol.modes import rules_for
from nanomoni.protocol.opening import open_channel_terms
from nanomoni.protocol.payments import require_mode
from nanomoni.protocol.settlement import check_settlement
from nanomoni.serve import load_or_create_key
from nanomoni.store import open_issuer_store, store_url
from nanomoni.store.base import IssuerStore
from nanomoni.wire import decode

PREFIX = "/api/v1/issuer"


@dataclass(frozen=True, kw_only=True)
class IssuerConfig:
    data_dir: Path
    store: str | None = None  # default: sqlite file in data_dir
    key_file: Path | None = None  # default: issuer-key.pem in data_dir
    initial_balance: int = config.INITIAL_BALANCE
    admin_token: str | None = None
    max_body: int = config.MAX_BODY
    max_index: int = config.MAX_INDEX

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

    @property
    def store(self) -> IssuerStore:
        if self._store is None:
            raise RuntimeError("issuer store used before start-up")
        return self._store

    async def start(self) -> None:
        self._store = await open_issuer_store(self.config.store_url)

    async def stop(self) -> None:
        if self._store is not None:
            await self._store.close()
            self._store = None

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
        token = self.config.admin_token
        if not token:
            raise NanoMoniError(
                Code.forbidden, "deposits are disabled: the issuer has no admin token"
            )
        expected = f"Bearer {token}".encode()
        if authorization is None or not hmac.compare_digest(authorization.encode(), expected):
            raise NanoMoniError(Code.unauthorized, "deposits need the admin bearer token")
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
        )
        async with metrics.timed_store("open_channel"):
            opened = await self.store.open_channel(terms)
        if opened.replayed:  # the same open again: its channel, nothing debited twice
            view = wire.channel_view(rules, opened.terms, None, opened=True)
            return json_response(view, 200)
        metrics.channel_opened(rules.mode.value)
        return json_response(wire.channel_view(rules, terms, None, opened=True), 201)

    async def _channel(self, channel_id: str) -> tuple[ChannelTerms, Closure | None]:
        async with metrics.timed_store("get_channel"):
            channel = await self.store.get_channel(channel_id)
        if channel is None:
            raise NanoMoniError(Code.channel_not_found, "no such channel")
        return channel.terms, channel.closure

    async def read_channel(self, mode_segment: str, channel_id: str) -> Response[bytes]:
        encoding.require_channel_id(channel_id)
        rules = rules_for(mode_segment)
        terms, closure = await self._channel(channel_id)
        if terms.mode is not rules.mode:  # another mode's channel does not exist under this path
            raise NanoMoniError(
                Code.channel_not_found, f"no {rules.mode.value} channel with this id"
            )
        return json_response(wire.channel_view(rules, terms, closure, opened=False))

    async def settle(self, mode_segment: str, channel_id: str, raw: bytes) -> Response[bytes]:
        encoding.require_channel_id(channel_id)
        rules = rules_for(mode_segment)
        mode = rules.mode.value
        try:
            body = wire.decode_settlement(rules, raw)
            terms, _ = await self._channel(channel_id)
            require_mode(rules, terms, "settlement")
            # A PayWord settlement may hash up to max_k times: off the event loop (GIL released).
            closure = await asyncio.to_thread(
                check_settlement, rules, terms, channel_id, body, now=encoding.utc_now()
            )
            async with metrics.timed_store("settle"):
                settled = await self.store.settle(channel_id, closure)
        except NanoMoniError as exc:
            metrics.settlement(mode, "rejected" if exc.status < 500 else "error")
            raise
        # The store answers a repeated identical settlement with the original closure.
        repeated = settled.closed_at != closure.closed_at
        metrics.settlement(mode, "replay" if repeated else "settled")
        response = wire.SettlementResponse(
            channel_id, settled.client_balance, settled.vendor_balance
        )
        return json_response(response)


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

    return build_app(
        service="issuer",
        routes=[register, account, deposit, public_key, open_channel, read_channel, settle],
        on_startup=[issuer.start],
        on_shutdown=[issuer.stop],
        max_body=config.max_body,
    )
