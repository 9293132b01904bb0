"""Typed ``web.AppKey``s: how the aiohttp application holds its shared objects.

Use ``app[SETTINGS]`` / ``request.app[WORKER_POOL]`` instead of module globals;
type checkers see the value's type. Each subsystem that starts something in a
``cleanup_ctx`` stores it under a key declared here (or in its own module,
next to its cleanup_ctx, when it is private to that subsystem).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from aiohttp import web

from control.config import Settings

if TYPE_CHECKING:  # keep this module importable without the native worker layer
    from workers.worker_pool import WorkerPool

#: The validated configuration the app was created with.
SETTINGS: Final[web.AppKey[Settings]] = web.AppKey("settings", Settings)

#: The running mediasoup worker pool (set by ``control.app.worker_pool_ctx``).
WORKER_POOL: Final[web.AppKey[WorkerPool]] = web.AppKey("worker_pool")

__all__ = ["SETTINGS", "WORKER_POOL"]
