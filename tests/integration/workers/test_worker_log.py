"""The worker's log lines forwarded to loguru: a throw a request caused is a warning."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from loguru import logger

from tests.polling import eventually
from workers.channel import is_thrown_error
from workers.errors import MediasoupError
from workers.router import Router

REMOTE_DTLS = {
    "role": "client",
    "fingerprints": [{"algorithm": "sha-256", "value": ":".join(["AB"] * 32)}],
}


@pytest.fixture
def worker_lines() -> Iterator[list[tuple[str, str]]]:
    """(level, message) of every ``[worker]`` line forwarded while the test runs."""
    lines: list[tuple[str, str]] = []

    def sink(message: Any) -> None:
        record = message.record
        if record["name"] == "workers.channel" and record["message"].startswith("[worker]"):
            lines.append((record["level"].name, record["message"]))

    sink_id = logger.add(sink, level="DEBUG")
    try:
        yield lines
    finally:
        logger.remove(sink_id)


async def test_a_refused_request_logs_a_warning_not_an_error(router: Router, worker_lines: list[Any]) -> None:
    transport = await router.create_webrtc_transport(listen_infos=[{"protocol": "udp", "ip": "127.0.0.1"}])
    await transport.connect(dtls_parameters=REMOTE_DTLS)
    with pytest.raises(MediasoupError):  # already connected: the worker throws
        await transport.connect(dtls_parameters=REMOTE_DTLS)
    thrown = await eventually(lambda: [line for line in worker_lines if "throwing MediaSoupError" in line[1]])
    assert [level for level, _ in thrown] == ["WARNING"], thrown
    assert not [line for line in worker_lines if line[0] == "ERROR"], worker_lines


@pytest.mark.parametrize(
    ("text", "thrown"),
    [
        ("WebRtcTransport::HandleRequest() | throwing MediaSoupError: connect() already called", True),
        ("Transport::HandleRequest() | throwing MediaSoupTypeError: missing dtlsParameters", True),
        ("UdpSocketHandle::OnUvRecv() | received datagram was truncated due to insufficient buffer", False),
        ("Worker::HandleNotification() | notification failed: throwing MediaSoupError", False),
        ("ChannelSocket::OnConsumerSocketMessage() | discarding wrong Channel data", False),
    ],
)
def test_only_the_line_before_a_throw_is_lowered(text: str, thrown: bool) -> None:
    assert is_thrown_error(text) is thrown
