"""HTTP side of the local directory store's presigned URLs.

``GET  /api/storage/objects/<key>?expires=...&signature=...``  download
``PUT  /api/storage/objects/<key>?content-type=...&content-length=...&expires=...&signature=...``  upload

Served only when the app's store is :class:`~control.storage.local.LocalStorage`
(404 otherwise: with S3 the URLs point at the S3 server). As with S3: a bad,
altered or expired signature is 403, and a PUT must carry exactly the signed
``Content-Type`` and ``Content-Length`` (403 otherwise, 411 without a length).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets

from aiohttp import web
from loguru import logger

from control.keys import STORAGE
from control.storage.base import StorageError
from control.storage.keys import InvalidKey
from control.storage.local import URL_PREFIX, LocalStorage, SignatureInvalid

routes = web.RouteTableDef()

_CHUNK = 1 << 20


def _local(request: web.Request) -> LocalStorage:
    store = request.app.get(STORAGE)
    if not isinstance(store, LocalStorage):
        raise web.HTTPNotFound()
    return store


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


@routes.get(URL_PREFIX + "/{key:.+}")
async def get_object(request: web.Request) -> web.StreamResponse:
    store = _local(request)
    key = request.match_info["key"]
    try:
        params = store.verify_signature("GET", key, request.query)
    except (SignatureInvalid, InvalidKey) as exc:
        logger.warning("refused presigned GET of {!r}: {}", key, exc)
        return _error(403, str(exc))
    info = await store.head(key)
    if info is None:
        return _error(404, "no such object")
    headers = {"Content-Type": info.content_type}
    if info.etag:
        headers["ETag"] = f'"{info.etag}"'
    if params.get("filename"):
        headers["Content-Disposition"] = f'attachment; filename="{params["filename"]}"'
    return web.FileResponse(store.path_for(key), headers=headers)


@routes.put(URL_PREFIX + "/{key:.+}")
async def put_object(request: web.Request) -> web.Response:
    store = _local(request)
    key = request.match_info["key"]
    try:
        params = store.verify_signature("PUT", key, request.query)
    except (SignatureInvalid, InvalidKey) as exc:
        logger.warning("refused presigned PUT of {!r}: {}", key, exc)
        return _error(403, str(exc))
    content_type = request.headers.get("Content-Type", "")
    if content_type != params.get("content-type"):
        return _error(403, "Content-Type does not match the signed one")
    if request.content_length is None:
        return _error(411, "Content-Length required")
    if str(request.content_length) != params.get("content-length"):
        return _error(403, "Content-Length does not match the signed one")
    expected = request.content_length
    incoming = store.root / ".incoming"
    tmp = incoming / f"{secrets.token_hex(8)}.part"
    received = 0
    try:
        await asyncio.to_thread(incoming.mkdir, parents=True, exist_ok=True)
        f = await asyncio.to_thread(open, tmp, "wb")
        try:
            async for chunk in request.content.iter_chunked(_CHUNK):
                received += len(chunk)
                if received > expected:
                    return _error(400, "body longer than Content-Length")
                await asyncio.to_thread(f.write, chunk)
            await asyncio.to_thread(f.flush)
        finally:
            await asyncio.to_thread(f.close)
        if received != expected:
            return _error(400, f"body is {received} bytes, Content-Length said {expected}")
        ref = await store.put_file(tmp, key, content_type)
    except StorageError as exc:
        logger.error("presigned PUT of {!r} failed: {}", key, exc)
        return _error(500, "could not store the object")
    finally:
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(tmp.unlink)
    logger.info("stored {} ({} bytes) from a presigned PUT", key, ref.size)
    return web.Response(status=200, headers={"ETag": f'"{ref.etag}"'})
