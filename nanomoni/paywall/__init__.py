"""Pay-per-request over HTTP 402 (SPEC §11): `Paywall` prices the routes of any ASGI
app (Litestar, Starlette/FastAPI, ...), in the process of the app itself.

    app = Paywall(
        my_app,
        issuer_url="http://127.0.0.1:8001",
        store="redis://127.0.0.1:6379/1",      # the vendor's store (may be shared)
        key_file="vendor-key.pem",             # the vendor's key (created if absent)
        prices={
            "GET /quotes/{symbol}": 3,                         # per request
            "POST /search": lambda scope: 5,                   # computed per request
            "GET /completions": {"price_per_chunk": 1},        # per event of an SSE stream
        },
    )
"""

from nanomoni.paywall.middleware import Paywall
from nanomoni.paywall.prices import Price, RouteTable
from nanomoni.paywall.stream import InsufficientCredit

__all__ = ["InsufficientCredit", "Paywall", "Price", "RouteTable"]
