"""Keep-alive HTTP access to the issuer and vendor APIs (SPEC §4–§6).

Every 4xx/5xx answer becomes an ApiError carrying the SPEC code and status.
"""

from __future__ import annotations

import asyncio
from typing import TypeVar
from urllib.parse import urlsplit

import aiohttp
import msgspec

from nanomoni import wire
from nanomoni.encoding import b64encode
from nanomoni.errors import Code, NanoMoniError, http_status
from nanomoni.protocol.model import ChannelInfo, SignedReceipt
from nanomoni.protocol.modes import AnyRules

T = TypeVar("T")
JSON = {"Content-Type": "application/json"}
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


class ApiError(NanoMoniError):
    """A refusal from a service: its SPEC code, HTTP status and detail sentence."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        try:
            known = Code(code)
        except ValueError:
            known = Code.internal_error
        super().__init__(known, detail)
        self.raw_code = code  # as sent, even if this client does not know it
        self.http_status = status

    @property
    def status(self) -> int:
        return self.http_status

    def __str__(self) -> str:
        return f"{self.http_status} {self.raw_code}: {self.detail}"


# Failures after which the request may or may not have reached the service:
# only safe to repeat with the identical body.
TRANSIENT = (aiohttp.ClientConnectionError, asyncio.TimeoutError)


def require_loopback(url: str) -> str:
    """The root URL without a trailing slash; refuses anything but loopback http."""
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname not in {h.strip("[]") for h in LOOPBACK_HOSTS}:
        raise ValueError(f"{url!r} is not a loopback http:// URL")
    return url.rstrip("/")


_error_decoder = msgspec.json.Decoder(wire.ErrorResponse)


def api_error(status: int, body: bytes) -> ApiError:
    try:
        error = _error_decoder.decode(body)
        return ApiError(status, error.code, error.detail)
    except msgspec.DecodeError:
        text = body[:200].decode("utf-8", "replace")
        return ApiError(status, Code.internal_error.value, f"unexpected answer: {text!r}")


class Http:
    """One aiohttp session (keep-alive pool) shared by both service clients."""

    def __init__(self, *, connections: int = 100, timeout: float = 30.0) -> None:
        self._connections = connections
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        # Created lazily so it binds to the loop that uses it.
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._connections),
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(
        self,
        method: str,
        url: str,
        body: bytes | None = None,
        *,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        """Status and raw body; raises ApiError for 4xx/5xx."""
        all_headers = dict(JSON) if body is not None else {}
        if headers:
            all_headers.update(headers)
        async with self.session.request(
            method, url, data=body, params=params, headers=all_headers
        ) as response:
            data = await response.read()
            if response.status >= 400:
                raise api_error(response.status, data)
            return response.status, data


def _decode(data: bytes, kind: type[T]) -> T:
    return msgspec.json.decode(data, type=kind)


class IssuerApi:
    def __init__(self, http: Http, url: str) -> None:
        self.http = http
        self.url = url.rstrip("/")
        self.api = f"{self.url}/api/v1/issuer"

    async def register(self, public_key_b64: str) -> wire.AccountResponse:
        body = msgspec.json.encode(wire.RegisterRequest(client_public_key_der_b64=public_key_b64))
        _, data = await self.http.send("POST", f"{self.api}/accounts", body)
        return _decode(data, wire.AccountResponse)

    async def account(self, public_key_b64: str) -> wire.AccountResponse:
        _, data = await self.http.send(
            "GET", f"{self.api}/accounts", params={"public_key_der_b64": public_key_b64}
        )
        return _decode(data, wire.AccountResponse)

    async def deposit(self, public_key_b64: str, amount: int, admin_token: str) -> int:
        body = msgspec.json.encode(
            wire.DepositRequest(public_key_der_b64=public_key_b64, amount=amount)
        )
        _, data = await self.http.send(
            "POST",
            f"{self.api}/accounts/deposits",
            body,
            headers={"Authorization": f"Bearer {admin_token}"},
        )
        return _decode(data, wire.AccountResponse).balance

    async def public_key(self) -> str:
        _, data = await self.http.send("GET", f"{self.api}/keys/public")
        return _decode(data, wire.IssuerKeyResponse).der_b64

    async def open_channel(
        self, rules: AnyRules, body: bytes
    ) -> tuple[ChannelInfo, SignedReceipt | None]:
        """Send a signed open body (`wire.open_body`): the channel and its open receipt."""
        _, data = await self.http.send("POST", f"{self.api}/channels/{rules.mode.value}", body)
        return wire.decode_channel(rules, data), wire.decode_receipt(data)

    def channel_url(self, rules: AnyRules, channel_id: str) -> str:
        return f"{self.api}/channels/{rules.mode.value}/{channel_id}"

    async def channel(self, rules: AnyRules, channel_id: str) -> ChannelInfo:
        _, data = await self.http.send("GET", self.channel_url(rules, channel_id))
        return wire.decode_channel(rules, data)

    async def client_close(
        self, rules: AnyRules, channel_id: str, consent: bytes
    ) -> ChannelInfo:
        """Start the dispute window (SPEC §4.6); `consent` signs `client_close`."""
        request = wire.ClientClosureRequest(
            channel_id=channel_id, client_signature_b64=b64encode(consent)
        )
        url = self.channel_url(rules, channel_id) + "/client-closures"
        _, data = await self.http.send("POST", url, wire.encode(request))
        return wire.decode_channel(rules, data)

    async def top_up(
        self, rules: AnyRules, channel_id: str, body: bytes
    ) -> tuple[ChannelInfo, SignedReceipt | None]:
        """Send a signed top-up body (`wire.top_up_body`): the channel and the receipt."""
        url = self.channel_url(rules, channel_id) + "/top-ups"
        _, data = await self.http.send("POST", url, body)
        return wire.decode_channel(rules, data), wire.decode_receipt(data)


class VendorApi:
    def __init__(self, http: Http, url: str) -> None:
        self.http = http
        self.url = url.rstrip("/")
        self.api = f"{self.url}/api/v1/vendor"

    async def public_key(self) -> str:
        _, data = await self.http.send("GET", f"{self.api}/keys/public")
        return _decode(data, wire.VendorKeyResponse).public_key_der_b64

    def payment_url(self, rules: AnyRules, channel_id: str) -> str:
        return f"{self.api}/channels/{rules.mode.value}/{channel_id}/payments"

    async def pay(
        self, rules: AnyRules, channel_id: str, body: bytes
    ) -> tuple[int, wire.PaymentResponse]:
        """Send an encoded payment body: (201 new | 200 replay, response)."""
        status, data = await self.http.send("POST", self.payment_url(rules, channel_id), body)
        return status, _decode(data, wire.PaymentResponse)

    @property
    def batch_url(self) -> str:
        return f"{self.api}/payments/batch"

    @property
    def stream_url(self) -> str:
        return f"{self.api}/payments/stream"

    async def pay_batch(self, body: bytes) -> list[wire.ItemResult]:
        """Send an encoded batch (`wire.encode_batch`): one result per item, in order."""
        _, data = await self.http.send("POST", self.batch_url, body)
        return wire.decode_batch_results(data)

    async def stream(self) -> PaymentStream:
        """A WebSocket to the payment stream (SPEC §12); close it when done."""
        socket = await self.http.session.ws_connect(self.stream_url, max_msg_size=0)
        return PaymentStream(socket)

    async def close(self, rules: AnyRules, channel_id: str, consent: bytes) -> None:
        """Ask the vendor to settle; `consent` is the client's signature of it."""
        request = wire.ClosureRequest(
            channel_id=channel_id, client_signature_b64=b64encode(consent)
        )
        body = wire.encode(request)
        path = f"{self.api}/channels/{rules.mode.value}/{channel_id}/closure-requests"
        await self.http.send("POST", path, body)


class PaymentStream:
    """One WebSocket to the vendor's payment stream: a frame out, its results back."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self.socket = socket
        self._lock = asyncio.Lock()  # answers come in order: one frame in flight at a time

    async def send(self, body: bytes) -> list[wire.ItemResult]:
        """A batch body (`wire.encode_batch`) as one frame: its results. An error frame
        (a refused envelope) raises ApiError; a lost socket raises aiohttp's
        ClientConnectionError (TRANSIENT: resend on a new stream)."""
        async with self._lock:
            await self.socket.send_str(body.decode())
            message = await self.socket.receive()
        if message.type is not aiohttp.WSMsgType.TEXT:
            raise aiohttp.ClientConnectionError(f"payment stream ended ({message.type.name})")
        data = message.data.encode()
        try:
            return wire.decode_batch_results(data)
        except NanoMoniError:
            error = api_error(0, data)
            error.http_status = http_status(error.code)  # a frame carries no status line
            raise error from None

    async def close(self) -> None:
        await self.socket.close()
