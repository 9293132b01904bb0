"""Run the real Parley app on loopback for signaling and end-to-end tests.

``async with running_server(tmp_path, **settings) as server`` starts
``control.app.create_app`` (real mediasoup workers, embedded chat/events/storage
backends under ``tmp_path``) on 127.0.0.1 with an ephemeral port, RTC on
127.0.0.1, and stops it afterwards. With ``api_key=``/``api_secret=`` it requires
tokens: ``server.token(room, identity, can_publish=False, ...)`` mints one.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import io
import sys
import threading
import traceback
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from control.app import create_app
from control.auth import ACCESS, VideoGrants, mint
from control.config import Settings
from control.keys import ROOMS, WORKER_POOL
from tests.plugin_workers import require_worker_binary

#: A server whose shutdown takes longer than this is stuck: its stacks are dumped and
#: the test fails with them, long before pytest's timeout (seconds).
SHUTDOWN_LIMIT = 20.0


@dataclass
class Server:
    app: web.Application
    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws_url(self, room_id: str, peer_id: str, path: str = "/", **query: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}?{urlencode({'roomId': room_id, 'peerId': peer_id, **query})}"

    def token(
        self, room: str, identity: str, *, ttl: timedelta = timedelta(hours=1), now: float | None = None, **grants: Any
    ) -> str:
        """A token of the server's API key to join ``room`` as ``identity``; ``grants`` are
        :class:`~control.auth.VideoGrants` fields (``can_publish=False``, ``hidden=True``...)."""
        video = VideoGrants(**{"room": room, "room_join": True, **grants})
        return mint(self.app[ACCESS].keys, identity=identity, name=identity, grants=video, ttl=ttl, now=now)

    @property
    def rooms(self) -> Any:
        return self.app[ROOMS]

    @property
    def pool(self) -> Any:
        return self.app[WORKER_POOL]


def server_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "_env_file": None,
        "host": "127.0.0.1",
        "port": 3000,
        "data_dir": tmp_path / "data",
        "mongodb_uri": None,
        "rabbitmq_url": None,
        "minio_endpoint": None,
        "redis_url": None,
        "mediasoup_num_workers": 2,
        "mediasoup_listen_ip": "127.0.0.1",
        "mediasoup_announced_address": None,
        "peer_reconnect_grace_seconds": 0,
    }
    values.update(overrides)
    return Settings(**values)


@contextlib.asynccontextmanager
async def running_server(tmp_path: Path, **overrides: Any) -> AsyncIterator[Server]:
    require_worker_binary()
    # Settings read the environment and .env for ~150 fields: 20-60 ms of pydantic work,
    # done in a thread so the loop (serving the other node of a cluster test) turns.
    app = create_app(await asyncio.to_thread(server_settings, tmp_path, **overrides))
    runner = web.AppRunner(app, shutdown_timeout=5)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        yield Server(app, port)
    finally:
        await stop_runner(runner, "server")


async def stop_runner(runner: web.AppRunner, what: str) -> None:
    """``runner.cleanup()``, bounded: past :data:`SHUTDOWN_LIMIT` every asyncio task's
    and thread's stack goes to stderr and the test fails saying so (a shutdown that
    waits forever would otherwise only meet pytest's timeout, with no clue where).
    If the loop itself is blocked, faulthandler dumps the threads a little later."""
    faulthandler.dump_traceback_later(SHUTDOWN_LIMIT + 10, file=sys.__stderr__ or sys.stderr)
    try:
        cleanup = asyncio.ensure_future(runner.cleanup())
        done, _ = await asyncio.wait([cleanup], timeout=SHUTDOWN_LIMIT)
        if cleanup in done:
            cleanup.result()
            return
        dump = stacks()
        print(f"\n=== {what}: shutdown not done after {SHUTDOWN_LIMIT:.0f}s ===\n{dump}", file=sys.__stderr__)
        cleanup.cancel()
        await asyncio.wait([cleanup], timeout=5)
        raise AssertionError(f"{what}: shutdown did not finish within {SHUTDOWN_LIMIT:.0f}s; stacks:\n{dump}")
    finally:
        faulthandler.cancel_dump_traceback_later()


def stacks() -> str:
    """Every asyncio task's stack (this loop) and every thread's, as text."""
    out = io.StringIO()
    for task in asyncio.all_tasks():
        out.write(f"--- task {task.get_name()} {task!r:.300}\n")
        task.print_stack(limit=40, file=out)
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    for ident, frame in sys._current_frames().items():
        out.write(f"--- thread {names.get(ident, ident)}\n")
        out.write("".join(traceback.format_stack(frame, limit=40)))
    return out.getvalue()
