"""MongoDB-wire test server: mongoeco's proxy over its SQLite engine, SCRAM auth on.

Run by tests/services.py with the interpreter of `.venv-mongo` (mongoeco needs
Python >= 3.13; the project venv is 3.11), never imported by the project:

    .venv-mongo/bin/python tests/mongo_wire_server.py \
        --port 27999 --data /tmp/x/mongo.sqlite3 --user parley --password secret

Prints ``READY <host> <port>`` on stdout once it accepts connections, then serves
until SIGTERM/SIGINT, when it closes the engine cleanly (the SQLite file is reused by a
restart on the same port and file). Stdlib + mongoeco only.

Clients must ask for SCRAM-SHA-256 explicitly (``authMechanism=SCRAM-SHA-256`` in the
URI): mongoeco's hello does not answer ``saslSupportedMechs``, so pymongo would
otherwise fall back to SCRAM-SHA-1, which mongoeco refuses.

One local patch (``--no-fast-id-check`` turns it off): mongoeco 4.11's SQLite engine
checks every single-document insert for a duplicate ``_id`` by loading and decoding the
*whole* collection (``scan_payload_id=True``), so each insert costs O(collection size)
-- 0.17 s per insert_one at 2,000 documents, and an insert_many of 300 documents takes
~8 s over the wire. The scan exists for numeric ids (1 == 1.0 == Int64(1)); for an
ObjectId or str ``_id`` the storage key the engine looks up first is already exact,
so the patch skips the scan for those two types only.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--data", required=True, help="SQLite data file (created if missing)")
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--auth-source", default="admin")
    parser.add_argument(
        "--no-fast-id-check", action="store_true", help="keep mongoeco's full-collection _id scan on every insert"
    )
    return parser.parse_args(argv)


def patch_id_scan() -> None:
    """Skip the O(n) duplicate-_id scan for ObjectId/str ids (see module docstring)."""
    from mongoeco.engines.sqlite import SQLiteEngine
    from mongoeco.types import ObjectId

    original = SQLiteEngine._validate_document_against_unique_indexes
    if getattr(SQLiteEngine, "_parley_patched", False):
        return

    def validate(self, db_name, coll_name, document, **kwargs):
        if kwargs.get("scan_payload_id") and type(document.get("_id")) in (ObjectId, str):
            kwargs["scan_payload_id"] = False
        return original(self, db_name, coll_name, document, **kwargs)

    SQLiteEngine._validate_document_against_unique_indexes = validate
    SQLiteEngine._parley_patched = True


async def serve(args: argparse.Namespace) -> None:
    from mongoeco.engines.sqlite import SQLiteEngine
    from mongoeco.wire.auth import WireAuthUser
    from mongoeco.wire.proxy import AsyncMongoEcoProxyServer

    if not args.no_fast_id_check:
        patch_id_scan()
    user = WireAuthUser(
        username=args.user,
        password=args.password,
        source=args.auth_source,
        mechanisms=("SCRAM-SHA-256",),
        roles=({"role": "root", "db": "admin"},),
    )
    server = AsyncMongoEcoProxyServer(
        engine=SQLiteEngine(args.data),
        host=args.host,
        port=args.port,
        auth_users=(user,),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    address = await server.start()
    print(f"READY {address.host} {address.port}", flush=True)
    try:
        await stop.wait()
    finally:
        await server.close()


def main(argv: list[str] | None = None) -> int:
    if sys.version_info < (3, 13):
        print("mongo_wire_server: mongoeco needs Python >= 3.13 (run `make services-setup`)", file=sys.stderr)
        return 2
    try:
        import mongoeco  # noqa: F401
    except ImportError:
        print(
            "mongo_wire_server: mongoeco is not installed in this interpreter (run `make services-setup`)",
            file=sys.stderr,
        )
        return 2
    asyncio.run(serve(parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
