"""The per-client limits of a node: what one address (or one principal) may open and send.

=======================================  ==========================================  ===============================
what                                     settings                                    refused with (HTTP 429)
=======================================  ==========================================  ===============================
open signaling WebSockets of an address  ``MAX_CONNECTIONS_PER_IP``                  ``ip_connections_limit``
new WebSockets of an address             ``CONNECTIONS_PER_SECOND_PER_IP``,          ``ip_connection_rate_limited``
                                         ``CONNECTION_BURST_PER_IP``
REST requests of an address              ``REST_REQUESTS_PER_SECOND_PER_IP``,        ``ip_rate_limited``
                                         ``REST_REQUEST_BURST_PER_IP``
REST requests of a principal             ``REST_REQUESTS_PER_SECOND``,               ``principal_rate_limited``
                                         ``REST_REQUEST_BURST``
broadcaster creations of an address      ``BROADCASTERS_PER_MINUTE_PER_IP``          ``ip_broadcasters_limit``
=======================================  ==========================================  ===============================

Every refusal is a :class:`~control.errors.TooManyRequests` with ``Retry-After``, in
the one JSON error shape, before any handler (and, for an address, before any
credential is verified). A WebSocket is counted from its upgrade request until its
handler returns (the socket closed).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence

from aiohttp import web
from loguru import logger

from control.config import Settings
from control.errors import TooManyRequests
from control.ratelimit.buckets import BucketTable, retry_after
from control.ratelimit.clientip import Network, client_address, limit_key

__all__ = ["ClientLimits", "RateLimited", "RefusalLog"]

#: Seconds a client refused for holding too many sockets is told to wait.
CONNECTIONS_RETRY_AFTER = 5


class RateLimited(TooManyRequests):
    """429 from a per-client limit (``Retry-After`` set)."""


class ClientLimits:
    """The tables of one node (stored under ``control.ratelimit.CLIENT_LIMITS``)."""

    def __init__(self, settings: Settings) -> None:
        cap = settings.rate_limit_max_clients
        self.proxies: Sequence[Network] = tuple(settings.trusted_proxies)
        self.max_connections = settings.max_connections_per_ip
        self.connections: dict[str, int] = {}  # open WebSockets by address; no zero entries
        self.refused: Counter[str] = Counter()  # refusals by code (read by metrics)
        self.connection_rate = BucketTable(
            settings.connections_per_second_per_ip, settings.connection_burst_per_ip, cap
        )
        self.rest_by_address = BucketTable(
            settings.rest_requests_per_second_per_ip, settings.rest_request_burst_per_ip, cap
        )
        self.rest_by_principal = BucketTable(settings.rest_requests_per_second, settings.rest_request_burst, cap)
        per_minute = settings.broadcasters_per_minute_per_ip
        self.broadcasters = BucketTable(per_minute / 60.0, max(1, int(per_minute)), cap)

    def tables(self) -> dict[str, BucketTable]:
        return {
            "connection_rate": self.connection_rate,
            "rest_by_address": self.rest_by_address,
            "rest_by_principal": self.rest_by_principal,
            "broadcasters": self.broadcasters,
        }

    def key_of(self, request: web.Request) -> str:
        """The key ``request``'s client is limited under (see :mod:`control.ratelimit.clientip`)."""
        remote = request.remote
        if not self.proxies and remote and ":" not in remote:
            return remote  # an IPv4 peer, nothing to parse (the common case)
        return limit_key(client_address(request, self.proxies))

    # -- checks (each raises RateLimited) -------------------------------------------

    def check_connection(self, key: str) -> None:
        """May ``key`` open one more WebSocket? (takes a token of its connection rate)"""
        if self.connections.get(key, 0) >= self.max_connections:
            self.refused["ip_connections_limit"] += 1
            raise RateLimited(
                f"this address has {self.max_connections} open connections (MAX_CONNECTIONS_PER_IP)",
                code="ip_connections_limit",
                retry_after=CONNECTIONS_RETRY_AFTER,
            )
        self._take(
            self.connection_rate,
            key,
            "ip_connection_rate_limited",
            "too many new connections from this address (CONNECTIONS_PER_SECOND_PER_IP)",
        )

    def check_rest(self, key: str) -> None:
        self._take(
            self.rest_by_address,
            key,
            "ip_rate_limited",
            "too many requests from this address (REST_REQUESTS_PER_SECOND_PER_IP)",
        )

    def check_principal(self, principal_key: str) -> None:
        self._take(
            self.rest_by_principal,
            principal_key,
            "principal_rate_limited",
            "too many requests with these credentials (REST_REQUESTS_PER_SECOND)",
        )

    def check_broadcaster(self, key: str) -> None:
        self._take(
            self.broadcasters,
            key,
            "ip_broadcasters_limit",
            "too many broadcasters created from this address (BROADCASTERS_PER_MINUTE_PER_IP)",
        )

    def _take(self, table: BucketTable, key: str, code: str, message: str) -> None:
        wait = table.take(key)
        if wait > 0:
            self.refused[code] += 1
            raise RateLimited(message, code=code, retry_after=retry_after(wait))

    @contextlib.contextmanager
    def connection(self, key: str) -> Iterator[None]:
        """Count an open WebSocket of ``key`` while the block runs."""
        self.connections[key] = self.connections.get(key, 0) + 1
        try:
            yield
        finally:
            left = self.connections.get(key, 1) - 1
            if left > 0:
                self.connections[key] = left
            else:
                self.connections.pop(key, None)


class RefusalLog:
    """Refusals logged at most once a second (a flood must not flood the log), with the
    number left out since; the path only (a query may carry a token)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last = -math.inf
        self._quiet = 0

    def refused(self, request: web.Request, key: str, error: RateLimited) -> None:
        now = self._clock()
        if now - self._last < 1.0:
            self._quiet += 1
            return
        more = f" (and {self._quiet} more refusals in the last {now - self._last:.0f} s)" if self._quiet else ""
        self._last, self._quiet = now, 0
        logger.warning("{} {} from {} refused: {}{}", request.method, request.path, key, error.code, more)
