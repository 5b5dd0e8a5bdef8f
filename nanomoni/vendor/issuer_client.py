"""The vendor's keep-alive HTTP client to the issuer (registration, channels, settlement)."""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
import msgspec

from nanomoni import wire
from nanomoni.errors import Code, NanoMoniError
from nanomoni.protocol.model import Mode

log = logging.getLogger("nanomoni.vendor")

_ISSUER_DOWN = "the issuer is unreachable"


class IssuerClient:
    def __init__(self, issuer_url: str, *, timeout: float = 10.0, connections: int = 64) -> None:
        self.base = issuer_url.rstrip("/") + "/api/v1/issuer"
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=min(timeout, 3.0))
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None
        self._encoder = msgspec.json.Encoder()

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._connections, keepalive_timeout=30)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _request(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        data = None if body is None else self._encoder.encode(body)
        headers = None if data is None else {"content-type": "application/json"}
        try:
            async with self._open().request(
                method, self.base + path, data=data, headers=headers
            ) as reply:
                return reply.status, await reply.read()
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise NanoMoniError(Code.issuer_unavailable, f"{_ISSUER_DOWN}: {exc!r}") from None

    async def register(self, public_key_der_b64: str) -> None:
        status, payload = await self._request(
            "POST", "/accounts", wire.RegisterRequest(client_public_key_der_b64=public_key_der_b64)
        )
        if status not in (200, 201):
            raise NanoMoniError(
                Code.issuer_unavailable, f"registration refused ({status}): {_detail(payload)}"
            )

    async def channel(self, mode: Mode, channel_id: str) -> wire.ChannelResponse:
        status, payload = await self._request("GET", f"/channels/{mode.value}/{channel_id}")
        if status == 404:
            raise NanoMoniError(
                Code.channel_not_found, f"the issuer knows no {mode.value} channel {channel_id}"
            )
        if status != 200:
            raise NanoMoniError(
                Code.issuer_unavailable, f"issuer answered {status}: {_detail(payload)}"
            )
        try:
            return msgspec.json.decode(payload, type=wire.ChannelResponse)
        except msgspec.MsgspecError as exc:
            raise NanoMoniError(
                Code.issuer_unavailable, f"unreadable channel from the issuer: {exc}"
            ) from None

    async def settle(self, mode: Mode, channel_id: str, body: Any) -> wire.SettlementResponse:
        status, payload = await self._request(
            "POST", f"/channels/{mode.value}/{channel_id}/settlements", body
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


def _detail(payload: bytes) -> str:
    try:
        return str(msgspec.json.decode(payload, type=wire.ErrorResponse).detail)
    except msgspec.MsgspecError:
        return payload[:200].decode("utf-8", "replace")
