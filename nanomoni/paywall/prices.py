"""Route prices (SPEC §11): `"METHOD /path/{name}"` keys, each an int (money per
request), a callable of the ASGI scope returning one, or a metered stream
`{"price_per_chunk": N}` whose events cost N each — or N × `units(event)` when
`"units"` is given (e.g. the tokens an event carries)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from nanomoni.store.codec import MAX_INT

Scope = Mapping[str, Any]
PriceOf = Callable[[Scope], int]
UnitsOf = Callable[[bytes], int]
Price = int | PriceOf | Mapping[str, int | UnitsOf]

METERED = "price_per_chunk"
UNITS = "units"
_SEGMENT = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def checked_price(value: object, what: str) -> int:
    """A price must be a whole amount of money in [0, 2**63)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_INT:
        raise ValueError(f"{what} must be an int in [0, 2**63 - 1], got {value!r}")
    return value


@dataclass(frozen=True)
class Route:
    """One priced route: its price per request, or per unit of a metered stream's event."""

    key: str
    price: int | PriceOf
    metered: bool = False
    units: UnitsOf | None = None

    def price_for(self, scope: Scope) -> int:
        if callable(self.price):
            return checked_price(self.price(scope), f"the price of {self.key}")
        return self.price

    def chunk_cost(self, price: int, event: bytes) -> int:
        if self.units is None:
            return price
        units = checked_price(self.units(event), f"the units of an event of {self.key}")
        return checked_price(price * units, f"the price of an event of {self.key}")


def _route(key: str, price: Price) -> Route:
    if isinstance(price, Mapping):
        unknown = set(price) - {METERED, UNITS}
        if METERED not in price or unknown:
            raise ValueError(
                f"{key}: a metered price is {{{METERED!r}: N}} with optional {UNITS!r}"
            )
        units = price.get(UNITS)
        if units is not None and not callable(units):
            raise ValueError(f"{key}: {UNITS!r} must be a callable of the event's bytes")
        return Route(key, checked_price(price[METERED], key), metered=True, units=units)
    if callable(price):
        return Route(key, price)
    return Route(key, checked_price(price, key))


class RouteTable:
    """Finds the priced route of a request: exact paths by one lookup, templates in order."""

    def __init__(self, prices: Mapping[str, Price]) -> None:
        self._exact: dict[tuple[str, str], Route] = {}
        self._templates: list[tuple[str, re.Pattern[str], Route]] = []
        for key, price in prices.items():
            method, _, path = key.strip().partition(" ")
            path = path.strip()
            if not method.isalpha() or not path.startswith("/"):
                raise ValueError(f"a price key is 'METHOD /path', got {key!r}")
            route = _route(key, price)
            if "{" in path:
                parts = _SEGMENT.split(path)
                # Literal text escaped, each {name} one path segment.
                pattern = "".join(
                    re.escape(part) if n % 2 == 0 else f"(?P<{part}>[^/]+)"
                    for n, part in enumerate(parts)
                )
                self._templates.append((method.upper(), re.compile(pattern), route))
            else:
                self._exact[(method.upper(), path)] = route

    def match(self, method: str, path: str) -> Route | None:
        route = self._exact.get((method, path))
        if route is not None or not self._templates:
            return route
        for wanted, pattern, candidate in self._templates:
            if wanted == method and pattern.fullmatch(path):
                return candidate
        return None
