"""Fixtures that run the real ``mediasoup-worker`` binary.

A missing binary is an error that says how to build it, never a skip.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from workers.native import worker_binary
from workers.worker import Worker, WorkerSettings

# The codecs mediasoup's own tests use for their routers.
MEDIA_CODECS = [
    {
        "kind": "audio",
        "mimeType": "audio/opus",
        "clockRate": 48000,
        "channels": 2,
        "parameters": {"useinbandfec": 1, "foo": "bar"},
    },
    {"kind": "video", "mimeType": "video/VP8", "clockRate": 90000},
    {
        "kind": "video",
        "mimeType": "video/H264",
        "clockRate": 90000,
        "parameters": {
            "level-asymmetry-allowed": 1,
            "packetization-mode": 1,
            "profile-level-id": "4d0032",
            "foo": "bar",
        },
    },
]


def require_worker_binary() -> str:
    try:
        path = worker_binary()
    except FileNotFoundError as error:
        pytest.fail(f"mediasoup-worker is not built: {error}", pytrace=False)
    if not path.exists():
        pytest.fail(f"mediasoup-worker not found at {path}; run `make setup`", pytrace=False)
    return str(path)


@pytest.fixture
async def worker() -> AsyncIterator[Worker]:
    require_worker_binary()
    w = await Worker.create(WorkerSettings(log_level="warn"))
    yield w
    w.close()
    await w.wait_closed()


@pytest.fixture
async def router(worker: Worker):
    return await worker.create_router(MEDIA_CODECS)
