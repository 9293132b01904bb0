"""Warm node-to-node connections: a relay's upgrade to the room's node reuses an open
TCP connection instead of opening one.

Measured on the relaying node (aiohttp trace of the node-to-node ``ws_connect``,
``bench/join_storm.py --compare-cluster``): opening the TCP connection was about a third
of the upgrade (0.8 of 2.2 ms on a loaded 2-core machine). So each time a relay takes a
connection to a node (a pooled one, or a new one), :class:`LinkWarmer` opens the next
one in the background (:data:`WARM_DELAY_SECONDS` later): a ``HEAD`` of :data:`WARM_PATH` with the relay token, answered
204 by the other node (403 without the token), after which the keep-alive connection
waits in the session's pool for the next relayed client. Idle connections close after
the connector's keep-alive timeout (15 s), so a quiet cluster keeps none open.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Final

import aiohttp
from aiohttp import hdrs
from yarl import URL

from control.cluster.stopping import stop_tasks

__all__ = ["WARM_PATH", "LinkWarmer"]

#: The route a node answers 204 to a relay token (and nothing else) on.
WARM_PATH: Final = "/cluster/link"
#: The spare is opened this long after a relay took a connection: opened at once, the
#: HEAD competed with the relayed client's first requests on both nodes (measured: the
#: upgrade gained what the next requests lost).
WARM_DELAY_SECONDS: Final = 0.1


class LinkWarmer:
    """Opens a spare connection to a node whenever a relay takes one (see the module doc)."""

    def __init__(self) -> None:
        #: The relay token header (set once the token is known; nothing is warmed before).
        self.headers: dict[str, str] = {}
        self.closed = False
        self._tasks: set[asyncio.Task[None]] = set()

    def trace_config(self) -> aiohttp.TraceConfig:
        """The hooks for the relay's ``ClientSession`` (``trace_configs=[...]``)."""
        config = aiohttp.TraceConfig()
        config.on_request_start.append(self._on_request_start)
        config.on_connection_reuseconn.append(self._on_connection_taken)
        config.on_connection_create_end.append(self._on_connection_taken)
        return config

    async def _on_request_start(
        self, session: aiohttp.ClientSession, context: SimpleNamespace, params: aiohttp.TraceRequestStartParams
    ) -> None:
        # Only a relay (a WebSocket upgrade) asks for a spare; the warming HEADs do not.
        context.origin = params.url.origin() if hdrs.UPGRADE in params.headers else None

    async def _on_connection_taken(self, session: aiohttp.ClientSession, context: SimpleNamespace, _: object) -> None:
        origin = getattr(context, "origin", None)
        if origin is not None and self.headers and not self.closed and not session.closed:
            task = asyncio.ensure_future(self._warm(session, origin))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _warm(self, session: aiohttp.ClientSession, origin: URL) -> None:
        await asyncio.sleep(WARM_DELAY_SECONDS)  # after the relayed client's first requests
        try:
            async with session.head(origin.join(URL(WARM_PATH)), headers=self.headers) as response:
                await response.read()
        except (aiohttp.ClientError, OSError, TimeoutError):
            pass  # the next relay opens its own connection, as without warming

    async def close(self) -> None:
        self.closed = True
        await stop_tasks(list(self._tasks), "cluster: warming connections")
