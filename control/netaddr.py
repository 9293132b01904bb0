"""The address Parley's ICE candidates announce, derived when none is configured.

mediasoup listening on ``0.0.0.0`` (the default ``MEDIASOUP_LISTEN_IP``) announces
nothing a browser can reach unless an announced address is set. Out of the box:

- ``MEDIASOUP_ANNOUNCED_ADDRESS`` set: that, as before;
- ``MEDIASOUP_LISTEN_IP`` a specific address: no announced address (the candidates
  carry the listen address itself);
- ``HOST`` loopback (the default ``127.0.0.1``): ``127.0.0.1`` (``::1`` for an IPv6
  listen): only this machine serves the page, so only this machine joins;
- otherwise the host's primary address: the source address of its default route.

:func:`with_announced_address` returns the settings the rooms use and logs which
address was chosen and why.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from typing import Final

from loguru import logger

from control.config import Settings

__all__ = ["announced_address", "is_loopback", "primary_address", "with_announced_address"]

_UNSPECIFIED: Final = ("0.0.0.0", "::")
#: A documentation address (TEST-NET-1): connecting a UDP socket to it only asks the
#: kernel for the route; no packet is sent.
_ROUTE_PROBE: Final = ("192.0.2.1", 9)


def is_loopback(host: str) -> bool:
    """``127.0.0.0/8``, ``::1`` or ``localhost``."""
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def primary_address() -> str | None:
    """This host's primary IPv4 address (the source of its default route), or None."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(_ROUTE_PROBE)  # UDP connect: a route lookup, nothing is sent
            address = str(probe.getsockname()[0])
    except OSError:
        address = ""
    if address and not is_loopback(address) and address != "0.0.0.0":
        return address
    try:
        address = socket.gethostbyname(socket.gethostname())
    except OSError:
        return None
    return None if is_loopback(address) else address


def announced_address(
    settings: Settings, primary: Callable[[], str | None] = primary_address
) -> tuple[str | None, str]:
    """The announced address the rooms should use, and why (for the start-up log)."""
    if settings.mediasoup_announced_address:
        return settings.mediasoup_announced_address, "MEDIASOUP_ANNOUNCED_ADDRESS"
    listen = settings.mediasoup_listen_ip
    if listen not in _UNSPECIFIED:
        return None, f"MEDIASOUP_LISTEN_IP={listen} is announced as it is"
    loopback = "::1" if listen == "::" else "127.0.0.1"
    if is_loopback(settings.host):
        return loopback, f"HOST={settings.host} is loopback: only this machine can join"
    found = primary()
    if found is None:
        return loopback, "no primary address found: only this machine can join; set MEDIASOUP_ANNOUNCED_ADDRESS"
    return found, f"the host's primary address (HOST={settings.host}); set MEDIASOUP_ANNOUNCED_ADDRESS to override"


def with_announced_address(settings: Settings, primary: Callable[[], str | None] = primary_address) -> Settings:
    """``settings`` with the announced address filled in as above (logged once)."""
    address, why = announced_address(settings, primary)
    if address is None:
        logger.info("ICE candidates: {} ({})", settings.mediasoup_listen_ip, why)
        return settings
    logger.info("ICE candidates announce {} ({})", address, why)
    if address == settings.mediasoup_announced_address:
        return settings
    return settings.model_copy(update={"mediasoup_announced_address": address})
