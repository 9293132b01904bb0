"""Token buckets by key (a client address, a principal) in a table of bounded size.

A bucket holds up to ``burst`` tokens and gains ``rate`` a second; a request takes
one. A bucket left alone for ``burst / rate`` seconds is full again, which is what a
key with no bucket gets: so such a bucket is dropped (the least recently used are
looked at on every call, two at a time, which keeps up with one new key a call).
And the table never holds more than ``max_keys`` buckets: a flood of distinct keys
(addresses behind a proxy, an IPv6 range) evicts the least recently used, which only
lets those keys start again with a full bucket; memory stays bounded.

No locks: it runs on the event loop, every call is a few dictionary operations.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["BucketTable", "retry_after"]


def retry_after(wait: float) -> int:
    """``Retry-After`` (whole seconds, at least 1) for a wait of ``wait`` seconds."""
    return max(1, math.ceil(wait))


class BucketTable:
    """Token buckets by key; :meth:`take` answers how long to wait (0: go ahead)."""

    __slots__ = ("_buckets", "_clock", "burst", "evicted", "idle", "max_keys", "rate")

    def __init__(self, rate: float, burst: int, max_keys: int, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1 or max_keys < 1:
            raise ValueError("rate > 0, burst >= 1 and max_keys >= 1 expected")
        self.rate = rate
        self.burst = float(burst)
        self.max_keys = max_keys
        self.idle = burst / rate
        self.evicted = 0  # buckets dropped because the table was full (not idle ones)
        self._clock = clock
        #: key -> (tokens, time of the last call), least recently used first.
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def __contains__(self, key: object) -> bool:
        return key in self._buckets

    def take(self, key: str) -> float:
        """Take a token of ``key``'s bucket: 0.0, or the seconds until one is there
        (nothing is taken then)."""
        now = self._clock()
        self._drop_idle(now)
        entry = self._buckets.pop(key, None)
        if entry is None:
            if len(self._buckets) >= self.max_keys:
                self._buckets.popitem(last=False)
                self.evicted += 1
            tokens = self.burst
        else:
            tokens = min(self.burst, entry[0] + (now - entry[1]) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate

    def _drop_idle(self, now: float) -> None:
        for _ in range(2):
            if not self._buckets:
                return
            key, (_tokens, stamp) = next(iter(self._buckets.items()))
            if now - stamp < self.idle:
                return
            del self._buckets[key]
