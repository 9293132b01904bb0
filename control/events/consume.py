"""Print the events waiting in a RabbitMQ queue (an operator's tool and a consumer example).

    python -m control.events.consume                 # the AI queue, forever, acking
    python -m control.events.consume --peek -n 10    # look at 10 without removing them
    python -m control.events.consume --queue ops.all --bind '#'   # a queue of your own

One JSON line per event on stdout (``integrations`` masked unless
``--show-secrets``); progress on stderr. ``RABBITMQ_URL`` and
``RABBITMQ_AI_QUEUE`` come from the environment/``.env`` like the server's.
Declares the exchange, the queue (durable) and its binding idempotently, as the
server does. Without ``--peek`` each message is acked after it is printed, so it
is consumed: don't point it at the AI service's queue in production unless that
is what you want. A real consumer should deduplicate on ``eventId`` (delivery is
at least once).

A ``recording.completed`` names the composite MP4 (``object``), every participant,
one audio file per participant (``tracks[]``: ``peerId``, ``displayName``, ``object``,
``offsetMs`` where its first sample falls in the composite, ``durationMs``) and the
``timeline`` JSON (joins, leaves, mutes, screen shares, active-speaker intervals, in ms):
enough to attribute speech to speakers without diarization.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from typing import Any

from control.events.publisher import describe_error
from control.events.schema import DEFAULT_AI_QUEUE, EXCHANGE, RECORDING_COMPLETED, redact_event
from control.logging import redact_text


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m control.events.consume", description="Print the events in a RabbitMQ queue."
    )
    parser.add_argument("--url", help="amqp:// URL (default: RABBITMQ_URL)")
    parser.add_argument("--queue", help=f"queue name (default: RABBITMQ_AI_QUEUE or {DEFAULT_AI_QUEUE})")
    parser.add_argument("--exchange", default=EXCHANGE, help="topic exchange (default: %(default)s)")
    parser.add_argument(
        "--bind",
        action="append",
        metavar="ROUTING_KEY",
        help=f"bind the queue to this pattern (repeatable; default: {RECORDING_COMPLETED})",
    )
    parser.add_argument("-n", "--count", type=int, default=0, help="stop after N events (0: never)")
    parser.add_argument(
        "--timeout", type=float, default=0.0, help="stop after this many seconds without an event (0: never)"
    )
    parser.add_argument("--peek", action="store_true", help="do not ack: the events stay queued")
    parser.add_argument("--show-secrets", action="store_true", help="print integrations unmasked")
    return parser.parse_args(argv)


def _render(body: bytes, show_secrets: bool) -> str:
    try:
        event: Any = json.loads(body)
    except ValueError:
        return json.dumps({"unparsable": body[:200].decode("utf-8", "replace")})
    if not show_secrets and isinstance(event, dict):
        event = redact_event(event)
    return json.dumps(event, ensure_ascii=False)


def main(argv: list[str] | None = None) -> int:
    import pika

    args = _args(argv)
    url, queue = args.url, args.queue
    if url is None or queue is None:
        from control.config import ConfigError, load_settings

        try:
            settings = load_settings()
        except ConfigError as exc:
            print(f"configuration error: {exc}", file=sys.stderr)
            return 2
        url = url or settings.rabbitmq_url
        queue = queue or getattr(settings, "rabbitmq_ai_queue", DEFAULT_AI_QUEUE)
    if not url:
        print("no broker: set RABBITMQ_URL or pass --url", file=sys.stderr)
        return 2
    try:
        conn = pika.BlockingConnection(pika.URLParameters(url))
    except pika.exceptions.AMQPError as exc:
        print(f"cannot connect to {redact_text(url)}: {describe_error(exc)}", file=sys.stderr)
        return 1
    channel = conn.channel()
    channel.exchange_declare(args.exchange, exchange_type="topic", durable=True)
    channel.queue_declare(queue, durable=True)
    for key in args.bind or [RECORDING_COMPLETED]:
        channel.queue_bind(queue, args.exchange, routing_key=key)
    channel.basic_qos(prefetch_count=10)
    print(f"reading queue {queue} on {redact_text(url)} (Ctrl-C to stop)", file=sys.stderr, flush=True)

    seen = 0
    stop = False

    def on_signal(*_: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    last_event = time.monotonic()
    try:
        while not stop and (args.count <= 0 or seen < args.count):
            method, _props, body = channel.basic_get(queue, auto_ack=False)
            if method is None:
                if args.timeout and time.monotonic() - last_event > args.timeout:
                    break
                conn.process_data_events(time_limit=0.2)
                continue
            print(_render(body, args.show_secrets), flush=True)
            if not args.peek:
                channel.basic_ack(method.delivery_tag)
            seen += 1
            last_event = time.monotonic()
    except KeyboardInterrupt:
        pass
    finally:
        # with --peek, closing without acks puts the messages back in the queue
        try:
            conn.close()
        except Exception:  # noqa: BLE001
            pass
    print(f"{seen} event(s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
