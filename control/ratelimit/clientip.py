"""Who a request comes from: the socket's peer address, or, from a trusted proxy only,
the client ``X-Forwarded-For`` names.

``X-Forwarded-For`` is whatever the sender wrote, so it is read only when the peer
is one of ``TRUSTED_PROXIES``; then the list is walked from the right (the entry the
nearest proxy appended) past every trusted address, and the first untrusted one is
the client. A malformed entry stops the walk (the address before it is used): a
client cannot pick the address it is limited as.

An IPv6 client is keyed by its /64 (one host usually has a whole /64 to pick
addresses from); an IPv4-mapped IPv6 address is its IPv4 address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from aiohttp import web

__all__ = ["UNKNOWN", "client_address", "limit_key", "parse_address"]

#: The key of a request without a peer address (a Unix socket).
UNKNOWN = "unknown"

Network = IPv4Network | IPv6Network
Address = IPv4Address | IPv6Address


def parse_address(text: str) -> Address | None:
    """An address as a peer or proxy writes it (``1.2.3.4``, ``1.2.3.4:5678``,
    ``[::1]:80``, ``::1``, ``fe80::1%eth0``), or None."""
    text = text.strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:  # IPv4 with a port
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: Address, proxies: Sequence[Network]) -> bool:
    return any(address.version == net.version and address in net for net in proxies)


def client_address(request: web.Request, proxies: Sequence[Network]) -> Address | None:
    """The client's address (see the module doc); None without a peer address."""
    peer = parse_address(request.remote) if request.remote else None
    if peer is None or not proxies or not _trusted(peer, proxies):
        return peer
    client = peer
    for header in reversed(request.headers.getall("X-Forwarded-For", [])):
        for entry in reversed(header.split(",")):
            hop = parse_address(entry)
            if hop is None:
                return client
            client = hop
            if not _trusted(hop, proxies):
                return hop
    return client


def limit_key(address: Address | None) -> str:
    """The key the limits count ``address`` under: the address, an IPv6 address's /64."""
    if address is None:
        return UNKNOWN
    if isinstance(address, IPv6Address):
        return str(IPv6Network((int(address) >> 64 << 64, 64)))
    return str(address)
