"""The arguments of ``parley load-test`` and the command (imports the WebRTC stack only when run)."""

from __future__ import annotations

import argparse
import sys

import uvloop

__all__ = ["add_arguments", "load_test_command"]

EXIT_OK = 0
EXIT_FAILED = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", required=True, help="the server's signaling URL, ws://HOST:PORT")
    parser.add_argument("--api-key", help="sign each peer's access token with this key (servers with API keys)")
    parser.add_argument("--api-secret", help="the secret of --api-key")
    parser.add_argument("--room", default="load-test", help="room name (with --rooms N: ROOM-1..ROOM-N)")
    parser.add_argument("--rooms", type=int, default=1, help="rooms, each with the publishers and subscribers")
    parser.add_argument("--publishers", type=int, default=1, help="publishers per room (audio + video)")
    parser.add_argument("--subscribers", type=int, default=1, help="receive-only subscribers per room")
    parser.add_argument("--video-resolution", default="360p", choices=("180p", "360p", "720p"))
    parser.add_argument(
        "--simulcast",
        action="store_true",
        help="video as one simulcast producer of three layers (quarter, half, full size; 360p or 720p)",
    )
    parser.add_argument(
        "--spatial-layer",
        type=int,
        action="append",
        default=[],
        metavar="N",
        help="with --simulcast: subscribers ask for this spatial layer (0 = lowest); repeat to alternate",
    )
    parser.add_argument("--audio-only", action="store_true", help="publish audio only")
    parser.add_argument(
        "--publishers-subscribe",
        action="store_true",
        help="publishers also receive the other publishers' tracks (a meeting: 4 publishers, 0 subscribers)",
    )
    parser.add_argument("--duration", type=float, required=True, help="seconds of steady state to measure")
    parser.add_argument("--join-concurrency", type=int, default=10, help="peers joining at once (default 10)")
    parser.add_argument("--timeout", type=float, default=10.0, help="per-request and connect timeout (s)")
    parser.add_argument(
        "--allow-remote-target",
        action="store_true",
        help="allow a server that is not on this machine: only for servers you operate",
    )


def load_test_command(args: argparse.Namespace) -> int:
    try:
        from control.loadtest.runner import LoadTestError, LoadTestOptions, run_load_test
    except ImportError as error:
        print(
            f"parley load-test: the WebRTC client stack is missing ({error}); install pymediasoup and aiortc",
            file=sys.stderr,
        )
        return EXIT_FAILED
    options = LoadTestOptions(
        url=args.url,
        room=args.room,
        publishers=args.publishers,
        subscribers=args.subscribers,
        rooms=args.rooms,
        resolution=args.video_resolution,
        simulcast=args.simulcast,
        spatial_layers=tuple(args.spatial_layer),
        audio_only=args.audio_only,
        publishers_subscribe=args.publishers_subscribe,
        duration=args.duration,
        api_key=args.api_key,
        api_secret=args.api_secret,
        allow_remote=args.allow_remote_target,
        join_concurrency=args.join_concurrency,
        timeout=args.timeout,
    )
    try:
        uvloop.run(run_load_test(options))  # as `parley run`: less overhead per packet than asyncio's loop
    except LoadTestError as error:
        print(f"parley load-test: {error}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_FAILED
    return EXIT_OK
