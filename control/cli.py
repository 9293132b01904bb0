"""The ``parley`` command (also ``python -m control``).

``parley run``     load the settings, set up logging, serve the app until
                   SIGINT/SIGTERM, then shut down gracefully (WebSockets,
                   recordings, outbox, workers) and exit 0.
``parley config``  print the effective settings (secrets masked) as ``VAR=value``.
``parley token create --room R --identity I [--name N] [--grants join,publish,...]
                   [--sources camera,microphone] [--ttl 6h]``
                   print an access token signed with API_KEY/API_SECRET (like
                   ``lk token create``).
``parley load-test --url ws://HOST:PORT --publishers P --subscribers S --duration SECONDS ...``
                   real WebRTC peers against a server, then a report (like
                   ``lk load-test``; :mod:`control.loadtest`). Needs no settings.

Exit status: 0 after a clean shutdown, 1 if the server could not start (workers,
port in use...), 2 for invalid configuration or usage (one line on stderr naming
the variable, no traceback).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import re
import signal
import ssl
import sys
from collections.abc import Sequence
from datetime import timedelta

import uvloop

from control.config import ConfigError, Settings, load_settings
from control.loadtest import command as load_test

EXIT_OK = 0
EXIT_START_FAILED = 1
EXIT_CONFIG = 2

#: Seconds aiohttp waits for in-flight requests/WebSockets after on_shutdown.
SHUTDOWN_TIMEOUT = 10.0
#: aiohttp access log line (loguru adds the time).
ACCESS_LOG_FORMAT = '%a "%r" %s %b %Tfs'


def _display_url(settings: Settings) -> str:
    host = settings.host
    if host in ("0.0.0.0", "::", ""):
        host = "localhost"
    elif ":" in host:
        host = f"[{host}]"
    scheme = "https" if settings.tls_cert_file else "http"
    return f"{scheme}://{host}:{settings.port}"


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """HTTPS and WSS from ``TLS_CERT_FILE``/``TLS_KEY_FILE`` (None: plain HTTP).

    Browsers open cameras only in a secure context: https, or http on localhost.
    """
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    return context


async def serve(settings: Settings) -> int:
    """Run the server until SIGINT/SIGTERM; return the process exit status."""
    from aiohttp import web
    from loguru import logger

    from control.app import create_app

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    received: list[signal.Signals] = []
    signals = (signal.SIGINT, signal.SIGTERM)

    def on_signal(sig: signal.Signals) -> None:
        received.append(sig)
        stop.set()
        # A second signal gets the default behaviour (interrupt / terminate now).
        for s in signals:
            loop.remove_signal_handler(s)

    for s in signals:
        loop.add_signal_handler(s, on_signal, s)

    logger.info("configuration: {}", json.dumps(settings.redacted(), default=str))
    for what, where in settings.backends().items():
        logger.info("{}: {}", what, where)

    runner = web.AppRunner(
        create_app(settings),
        shutdown_timeout=SHUTDOWN_TIMEOUT,
        access_log_format=ACCESS_LOG_FORMAT,
    )
    try:
        try:
            await runner.setup()
        except Exception as exc:  # noqa: BLE001 - any start-up failure: one line, exit 1
            logger.error("start-up failed: {}: {}", type(exc).__name__, exc)
            logger.opt(exception=exc).debug("start-up failure details")
            return EXIT_START_FAILED
        if stop.is_set():
            return EXIT_OK
        from control import cluster

        try:
            ssl_context = tls_context(settings)
        except (OSError, ssl.SSLError) as exc:
            logger.error("TLS_CERT_FILE/TLS_KEY_FILE not usable: {}", exc)
            return EXIT_START_FAILED
        # aiohttp's TCPSite, or in a cluster the one that takes (and makes) same-host handovers
        site = cluster.site(runner, settings.host, settings.port, ssl_context=ssl_context)
        try:
            await site.start()
        except OSError as exc:
            logger.error("cannot listen on {}:{}: {}", settings.host, settings.port, exc.strerror or exc)
            return EXIT_START_FAILED
        logger.info(
            "Parley listening on {} (HOST={} PORT={}); Ctrl-C or SIGTERM to stop",
            _display_url(settings),
            settings.host,
            settings.port,
        )
        freeze_startup_objects()
        await stop.wait()
        logger.info("{} received, shutting down", received[0].name if received else "stop")
        from control.cluster import drain_on_stop

        # In a cluster: no new rooms, the rooms here end first (a second signal stops now).
        await drain_on_stop(runner.app, settings.cluster_drain_timeout_seconds)
        return EXIT_OK
    finally:
        await runner.cleanup()
        logger.info("stopped")


def freeze_startup_objects() -> int:
    """Take what start-up made (modules, the app, settings, the workers' channels) out of
    the garbage collector's sight; the number of objects frozen.

    Why: CPython's collector scans every tracked object in a full collection, and runs
    one whenever enough new long-lived objects have piled up (a join storm makes them):
    this process's ~88,000 start-up objects took 16-50 ms per full collection, all of
    it on the event loop (measured on the 2-core CI machine, ``import control.app`` then
    ``gc.collect()``: 16 ms at best, 40-50 ms while the machine ran other work; after the
    freeze, 0.2 µs: tests/unit/test_gc_freeze.py). Frozen objects are never scanned again (``gc.freeze``,
    as CPython's docs advise for long-lived servers); garbage is collected first so that
    none of it is kept for good."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def _cmd_run(settings: Settings) -> int:
    from control.auth import resolve_policy
    from control.logging import setup_logging

    try:
        resolve_policy(settings)  # refuse an unsafe start with one line, before anything starts
    except ConfigError as exc:
        print(f"parley: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    setup_logging(settings.log_level, settings.log_format)
    # uvloop: a worker round trip costs the control plane ~4x less CPU than asyncio's loop.
    return uvloop.run(serve(settings))


def _cmd_config(settings: Settings) -> int:
    for name, value in settings.redacted().items():
        if isinstance(value, list):
            value = ",".join(map(str, value))
        print(f"{name}={'' if value is None else value}")
    return EXIT_OK


_DURATION_RE = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s?)?$")


def parse_duration(text: str) -> timedelta:
    """``6h``, ``30m``, ``1d12h``, ``90s`` or plain seconds (``--ttl``)."""
    m = _DURATION_RE.match(text.strip().lower())
    if not text.strip() or m is None:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r} (examples: 6h, 30m, 1d, 90s)")
    days, hours, minutes, seconds = (int(g or 0) for g in m.groups())
    ttl = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    if ttl <= timedelta(0):
        raise argparse.ArgumentTypeError("duration must be positive")
    return ttl


def _csv(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _cmd_token_create(settings: Settings, args: argparse.Namespace) -> int:
    from control.auth.grants import grants_from_names
    from control.auth.keys import KeyRing, KeysConfigError
    from control.auth.tokens import mint

    try:
        keys = KeyRing.build(settings.api_key, settings.api_secret, settings.api_keys_file)
    except KeysConfigError as exc:
        print(f"parley: invalid configuration: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if not keys:
        print("parley: set API_KEY and API_SECRET (or API_KEYS_FILE) to mint tokens", file=sys.stderr)
        return EXIT_CONFIG
    if args.api_key is not None and args.api_key not in keys:
        print(f"parley: --api-key {args.api_key!r} is not a configured key", file=sys.stderr)
        return EXIT_CONFIG
    try:
        names = args.grants if args.grants is not None else settings.default_grants
        grants = grants_from_names(names, room=args.room or "", sources=args.sources)
        token = mint(
            keys,
            identity=args.identity or "",
            name=args.name or "",
            metadata=args.metadata or "",
            grants=grants,
            ttl=args.ttl,
            api_key=args.api_key,
        )
    except ValueError as exc:
        print(f"parley: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(token)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="parley",
        description="Parley: WebRTC conferencing backend (aiohttp control plane, mediasoup workers). "
        "Configured by environment variables and ./.env; see README.md.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    sub.add_parser("run", help="start the server (stops gracefully on SIGINT/SIGTERM)")
    sub.add_parser("config", help="print the effective settings, secrets masked")
    token = sub.add_parser("token", help="access tokens").add_subparsers(dest="token_command", metavar="ACTION")
    token.required = True
    create = token.add_parser("create", help="print an access token signed with API_KEY/API_SECRET")
    create.add_argument("--room", help="the room the token is for (video.room)")
    create.add_argument("--identity", help="the participant's identity (sub = the peerId it joins as)")
    create.add_argument("--name", help="display name")
    create.add_argument("--metadata", help="participant metadata (free text, often JSON)")
    create.add_argument(
        "--grants",
        type=_csv,
        metavar="LIST",
        help="comma-separated: join,publish,subscribe,data,record,admin,list,ingress,hidden,rename (default: DEFAULT_GRANTS)",
    )
    create.add_argument(
        "--sources",
        type=_csv,
        metavar="LIST",
        help="only these sources may be published: camera,microphone,screen_share,screen_share_audio",
    )
    create.add_argument("--ttl", type=parse_duration, default=timedelta(hours=6), help="lifetime (default 6h)")
    create.add_argument("--api-key", help="which configured key signs (default: API_KEY, else the file's first)")
    load_test.add_arguments(sub.add_parser("load-test", help="real WebRTC peers against a server, then a report"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # usage errors exit 2 via argparse
    if args.command == "load-test":  # a client: the server's settings do not apply
        return load_test.load_test_command(args)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"parley: invalid configuration: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "run":
        return _cmd_run(settings)
    if args.command == "token":
        return _cmd_token_create(settings, args)
    return _cmd_config(settings)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
