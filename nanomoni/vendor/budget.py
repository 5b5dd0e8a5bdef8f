"""Bounds on failed expensive verification (SPEC §6 `rate_limited`, issue 10).

A PayWord payment may make the vendor walk up to `--max-hashes` hashes. A
client that sends such payments with wrong tokens costs the vendor ~45 ms of
CPU each and gets nothing; unbounded, a few of them slow every other client.
So failed walks longer than `crypto.INLINE_HASHES` (2^14) spend from two token
buckets: one per (channel, client address) and one for the whole worker.
Neither is keyed by channel alone, so a stranger cannot use up a channel's
budget for its owner; cheap failures never count.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

from nanomoni import config
from nanomoni.errors import Code, NanoMoniError


class _Bucket:
    __slots__ = ("level", "updated")

    def __init__(self, level: float, now: float) -> None:
        self.level = level
        self.updated = now


class HashBudget:
    """Token buckets holding `per_minute` hashes each, refilled continuously."""

    def __init__(
        self,
        per_client: int = config.HASH_BUDGET_PER_CLIENT,
        per_worker: int = config.HASH_BUDGET_PER_WORKER,
        *,
        max_clients: int = config.HASH_BUDGET_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_client = per_client
        self.per_worker = per_worker
        self.max_clients = max_clients
        self.clock = clock
        self._clients: OrderedDict[tuple[str, str], _Bucket] = OrderedDict()
        self._worker = _Bucket(per_worker, clock())

    def _refill(self, bucket: _Bucket, capacity: int, now: float) -> float:
        bucket.level = min(capacity, bucket.level + (now - bucket.updated) * capacity / 60.0)
        bucket.updated = now
        return bucket.level

    def check(self, channel_id: str, client: str, hashes: int) -> None:
        """429 `rate_limited` (with a Retry-After) unless both buckets could pay for a
        failed walk of `hashes` hashes."""
        now = self.clock()
        waits = []
        bucket = self._clients.get((channel_id, client))
        if bucket is not None and self._refill(bucket, self.per_client, now) < hashes:
            waits.append((hashes - bucket.level) * 60.0 / self.per_client)
        if self._refill(self._worker, self.per_worker, now) < hashes:
            waits.append((hashes - self._worker.level) * 60.0 / self.per_worker)
        if waits:
            raise NanoMoniError(
                Code.rate_limited,
                "too many failed expensive payments: retry later",
                retry_after=max(1, math.ceil(max(waits))),
            )

    def spend(self, channel_id: str, client: str, hashes: int) -> None:
        """A failed verification of `hashes` hashes."""
        now = self.clock()
        key = (channel_id, client)
        bucket = self._clients.get(key)
        if bucket is None:
            if len(self._clients) >= self.max_clients:
                self._clients.popitem(last=False)  # forget the stalest client (bounded memory)
            bucket = self._clients[key] = _Bucket(self.per_client, now)
        else:
            self._clients.move_to_end(key)
            self._refill(bucket, self.per_client, now)
        bucket.level -= hashes
        self._refill(self._worker, self.per_worker, now)
        self._worker.level -= hashes
