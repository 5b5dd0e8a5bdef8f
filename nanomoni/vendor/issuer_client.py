"""The vendor's keep-alive HTTP client to the issuer (registration, channels, settlement,
the closing channels it must settle)."""

from __future__ import annotations

import logging
import time
from urllib.parse import urlsplit

import aiohttp
import msgspec

from nanomoni import wire
from nanomoni.encoding import b64decode, require_channel_id
from nanomoni.errors import Code, NanoMoniError
from nanomoni.protocol.messages import Settlement
from nanomoni.protocol.model import ChannelInfo
from nanomoni.protocol.modes import AnyRules, Signer
from nanomoni.protocol.signed_requests import authorization

log = logging.getLogger("nanomoni.vendor")

_ISSUER_DOWN = "the issuer is unreachable"


class IssuerClient:
    def __init__(self, issuer_url: str, *, timeout: float = 10.0, connections: int = 64) -> None:
        self.base = issuer_url.rstrip("/") + "/api/v1/issuer"
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=min(timeout, 3.0))
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._connections, keepalive_timeout=30)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _request(
        self,
        method: str,
        path: str,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        headers = dict(headers or {})
        if data is not None:
            headers["content-type"] = "application/json"
        try:
            async with self._open().request(
                method, self.base + path, data=data, headers=headers
            ) as reply:
                return reply.status, await reply.read()
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise NanoMoniError(Code.issuer_unavailable, f"{_ISSUER_DOWN}: {_why(exc)}") from None

    async def register(self, public_key_der_b64: str) -> None:
        body = wire.encode(wire.RegisterRequest(client_public_key_der_b64=public_key_der_b64))
        status, payload = await self._request("POST", "/accounts", body)
        if status not in (200, 201):
            raise NanoMoniError(
                Code.issuer_unavailable, f"registration refused ({status}): {_detail(payload)}"
            )

    async def channel(self, rules: AnyRules, channel_id: str) -> ChannelInfo:
        mode = rules.mode.value
        require_channel_id(channel_id)  # outgoing URLs are built from canonical ids only
        status, payload = await self._request("GET", f"/channels/{mode}/{channel_id}")
        if status == 404:
            raise NanoMoniError(
                Code.channel_not_found, f"the issuer knows no {mode} channel {channel_id}"
            )
        if status != 200:
            raise NanoMoniError(
                Code.issuer_unavailable, f"issuer answered {status}: {_detail(payload)}"
            )
        try:
            return wire.decode_channel(rules, payload)
        except NanoMoniError as exc:
            raise NanoMoniError(
                Code.issuer_unavailable, f"unreadable channel from the issuer: {exc.detail}"
            ) from None

    async def settle(
        self, rules: AnyRules, channel_id: str, settlement: Settlement
    ) -> wire.SettlementResponse:
        require_channel_id(channel_id)
        status, payload = await self._request(
            "POST",
            f"/channels/{rules.mode.value}/{channel_id}/settlements",
            wire.encode_settlement(settlement),
        )
        if status == 200:
            return msgspec.json.decode(payload, type=wire.SettlementResponse)
        if 400 <= status < 500:
            raise NanoMoniError(
                Code.settlement_failed, f"the issuer refused the settlement: {_detail(payload)}"
            )
        raise NanoMoniError(
            Code.issuer_unavailable, f"issuer answered {status}: {_detail(payload)}"
        )

    async def public_key(self) -> bytes:
        """The issuer's key (DER), which signs its receipts."""
        status, payload = await self._request("GET", "/keys/public")
        if status != 200:
            raise NanoMoniError(
                Code.issuer_unavailable, f"issuer answered {status}: {_detail(payload)}"
            )
        try:
            text = msgspec.json.decode(payload, type=wire.IssuerKeyResponse).der_b64
            return b64decode(text, field="der_b64")
        except (msgspec.MsgspecError, NanoMoniError) as exc:
            raise NanoMoniError(
                Code.issuer_unavailable, f"unreadable issuer key: {exc}"
            ) from None

    async def closing_channels(self, key: Signer) -> wire.ClosingChannelsResponse:
        """Our channels in their dispute window (a request signed with our key, §4.7)."""
        path = "/vendors/closing-channels"
        target = urlsplit(self.base).path + path
        signed = authorization(key, "GET", target, b"", int(time.time()))
        status, payload = await self._request("GET", path, headers={"authorization": signed})
        if status != 200:
            raise NanoMoniError(
                Code.issuer_unavailable, f"issuer answered {status}: {_detail(payload)}"
            )
        try:
            return msgspec.json.decode(payload, type=wire.ClosingChannelsResponse)
        except msgspec.MsgspecError as exc:
            raise NanoMoniError(
                Code.issuer_unavailable, f"unreadable closing channels: {exc}"
            ) from None


def _why(exc: BaseException) -> str:
    """A short reason for a failed request to the issuer (one log line, no repr)."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        reason = exc.os_error.strerror or type(exc.os_error).__name__
        return f"cannot connect to {exc.host}:{exc.port} ({reason.lower()})"
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text[:120]}" if text else type(exc).__name__


def _detail(payload: bytes) -> str:
    try:
        return str(msgspec.json.decode(payload, type=wire.ErrorResponse).detail)
    except msgspec.MsgspecError:
        return payload[:200].decode("utf-8", "replace")
