"""The paywall's charge, one EVALSHA per request: the bytes must be the command the
script reads (keys, flags, then store_state's arguments), as hiredis's own packer
makes it, routed by the channel."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import hiredis
import pytest

from nanomoni.errors import Code, NanoMoniError
from nanomoni.protocol.model import PaymentState
from nanomoni.store.codec import MAX_INT
from nanomoni.store.redis import (
    _PAYWALL_CHARGE,
    RedisVendorStore,
    _request_key,
    _state_args,
    vendor_keys,
)
from nanomoni.store.resp import Script, pack

CHANNEL = "Ab-_" * 10 + "xyA"
STATE = PaymentState(
    index=12, owed=1200, proof=b"\x00\r\n" * 11, created_at="2026-12-01T15:00:00+00:00"
)


class _Capture:
    """Answers every charge `charged` and keeps the command it was sent."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def evalsha(self, script: Script, keys: Any, args: Any) -> list[Any]:
        assert script is _PAYWALL_CHARGE and keys[0] == vendor_keys(CHANNEL)[0]
        self.sent.append(pack("EVALSHA", script.sha, len(keys), *keys, *args))
        return [0, b"1200", b"7"]


def _generic(
    price: int,
    minimum: int,
    request_id: str | None,
    ttl_ms: int,
    new: PaymentState | None,
    nodes: Mapping[int, bytes],
    expected: int | None,
) -> bytes:
    need = max(price, minimum)
    keys = (*vendor_keys(CHANNEL), _request_key(CHANNEL, request_id))
    args: list[Any] = [need, need - price, "0" if request_id is None else "1", ttl_ms]
    args.append("0" if new is None else "1")
    if new is not None:
        args += _state_args(new, nodes, expected)
    packed: bytes = hiredis.pack_command(("EVALSHA", _PAYWALL_CHARGE.sha, len(keys), *keys, *args))
    return packed


@pytest.mark.parametrize("new", [None, STATE])
@pytest.mark.parametrize("request_id", [None, "r" * 16, "R_-9" * 16])
@pytest.mark.parametrize(
    ("price", "minimum", "expected", "nodes"),
    [
        (1, 0, None, {}),
        (0, 5, 11, {}),
        (MAX_INT, MAX_INT, MAX_INT, {}),
        (3, 3, 0, {(2 << 8) | 1: b"\x01" * 32, 7: b"\r\n" * 16}),
    ],
)
def test_the_charge_sends_the_scripts_arguments(
    new: PaymentState | None,
    request_id: str | None,
    price: int,
    minimum: int,
    expected: int | None,
    nodes: dict[int, bytes],
) -> None:
    capture = _Capture()
    store = RedisVendorStore(capture)  # type: ignore[arg-type]
    for remember, ttl_ms in ((60.0, 60000), (0.0001, 1), (2.5, 2500)):
        charge = asyncio.run(
            store.charge(
                CHANNEL, price, new=new, nodes=nodes, expected=expected,
                request_id=request_id, minimum=minimum, remember=remember,
            )
        )  # fmt: skip
        assert (charge.owed, charge.consumed) == (1200, 7)
        assert capture.sent.pop() == _generic(
            price, minimum, request_id, ttl_ms, new, nodes if new else {}, expected
        )


@pytest.mark.parametrize(
    ("price", "minimum", "new", "expected"),
    [
        (-1, 0, None, None),
        (0, MAX_INT + 1, None, None),
        (1, 0, PaymentState(index=-1, owed=0, proof=b"", created_at="t"), None),
        (1, 0, PaymentState(index=1, owed=MAX_INT + 1, proof=b"", created_at="t"), None),
        (1, 0, STATE, -5),
    ],
)
def test_amounts_out_of_the_ledgers_range_are_refused_unsent(
    price: int, minimum: int, new: PaymentState | None, expected: int | None
) -> None:
    capture = _Capture()
    store = RedisVendorStore(capture)  # type: ignore[arg-type]
    with pytest.raises(NanoMoniError) as refused:
        asyncio.run(store.charge(CHANNEL, price, new=new, expected=expected, minimum=minimum))
    assert refused.value.code is Code.invalid_amount
    assert capture.sent == []
