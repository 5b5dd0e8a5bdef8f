"""The vendor service (SPEC §5): HTTP in front of `vendor.core`.

Handlers only translate: validate the path, decode the body at the edge, call
the vendor core (decision, one atomic store step), encode the answer.
"""

from __future__ import annotations

from typing import Any

from litestar import MediaType, Request, Response, get, post

from nanomoni import wire
from nanomoni.encoding import require_channel_id
from nanomoni.http import HotPath, build_app, empty_response, frame_stream, json_response
from nanomoni.protocol.modes import rules_for
from nanomoni.vendor.core import Vendor, VendorConfig
from nanomoni.vendor.operations import BATCH_PATH, OPERATIONS, PREFIX, STREAM_PATH, STREAMS

__all__ = ["PREFIX", "VendorConfig", "create_app"]


def create_app(config: VendorConfig) -> HotPath:
    vendor = Vendor(config)

    async def pay_raw(
        mode_segment: str, channel_id: str, raw: bytes, client: str
    ) -> tuple[int, bytes]:
        """Status and JSON body of one payment (what the hot path serves)."""
        require_channel_id(channel_id)
        rules = rules_for(mode_segment)
        accepted = await vendor.pay(rules, channel_id, wire.decode_payment(rules, raw), client)
        body = wire.payment_response(rules, accepted.terms, accepted.state)
        return (200 if accepted.replay else 201), body

    async def pay_batch_raw(raw: bytes, client: str) -> tuple[int, bytes]:
        """SPEC §12: 200 with one result per item (only the envelope's errors raise)."""
        results = await vendor.pay_many(wire.decode_batch(raw), client)
        return 200, wire.encode(wire.BatchResponse(results))

    async def pay_frame(frame: bytes | str, client: str) -> bytes:
        results = await vendor.pay_many(wire.decode_frame(frame), client)
        return wire.encode(wire.BatchResponse(results))

    @get(f"{PREFIX}/keys/public", sync_to_thread=False)
    def public_key() -> Response[bytes]:
        return json_response(wire.VendorKeyResponse(vendor.public_key_b64))

    @post(f"{PREFIX}/channels/{{mode:str}}/{{channel_id:str}}/payments")
    async def pay(mode: str, channel_id: str, request: Request[Any, Any, Any]) -> Response[bytes]:
        """The route in the app's table (another method: 405); requests are answered by
        the HotPath in front (same handler)."""
        address = request.client.host if request.client else ""
        status, payload = await pay_raw(mode, channel_id, await request.body(), address)
        return Response(content=payload, status_code=status, media_type=MediaType.JSON)

    @post(BATCH_PATH, request_max_body_size=config.max_batch_body)
    async def pay_batch(request: Request[Any, Any, Any]) -> Response[bytes]:
        """The route in the app's table (another method: 405); requests are answered by
        the HotPath in front (same handler)."""
        address = request.client.host if request.client else ""
        status, payload = await pay_batch_raw(await request.body(), address)
        return Response(content=payload, status_code=status, media_type=MediaType.JSON)

    @post(f"{PREFIX}/channels/{{mode:str}}/{{channel_id:str}}/closure-requests")
    async def close(mode: str, channel_id: str, request: Request[Any, Any, Any]) -> Response[bytes]:
        require_channel_id(channel_id)
        rules = rules_for(mode)
        body = wire.decode_closure(await request.body())
        await vendor.close(rules, channel_id, body, request.headers.get("authorization"))
        return empty_response(204)

    app = build_app(
        service="vendor",
        routes=[public_key, pay, pay_batch, close],
        on_startup=[vendor.start],
        on_shutdown=[vendor.stop],
        max_body=config.max_body,
        operations=OPERATIONS,
        streams=STREAMS,
        readiness=lambda: vendor.unregistered,
    )
    return HotPath(
        app,
        prefix=f"{PREFIX}/channels/",
        suffix="/payments",
        handler=pay_raw,
        max_body=config.max_body,
        posts={BATCH_PATH: (pay_batch_raw, config.max_batch_body)},
        streams={STREAM_PATH: frame_stream(pay_frame, config.max_batch_body)},
    )
