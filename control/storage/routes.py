"""HTTP side of the local directory store's presigned URLs.

``GET  /api/storage/objects/<key>?expires=...&signature=...``  download
``PUT  /api/storage/objects/<key>?content-type=...&content-length=...&expires=...&signature=...``  upload

Served only when the app's store is :class:`~control.storage.local.LocalStorage`
(404 otherwise: with S3 the URLs point at the S3 server). As with S3: a bad,
altered or expired signature is 403 ``invalid_signature``, and a PUT must carry
exactly the signed ``Content-Type`` and ``Content-Length`` (403 otherwise, 411
``length_required`` without a length). Errors are the one REST error shape
(:mod:`control.http`).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets

from aiohttp import web
from loguru import logger

from control.errors import BadRequest, Forbidden, NotFound, ParleyError
from control.keys import OBJECTS
from control.storage.base import StorageError
from control.storage.keys import InvalidKey
from control.storage.local import URL_PREFIX, LocalStorage, SignatureInvalid

__all__ = ["routes"]

routes = web.RouteTableDef()

_CHUNK = 1 << 20


class LengthRequired(ParleyError):
    status = 411
    default_code = "length_required"


def _local(request: web.Request) -> LocalStorage:
    objects = request.app.get(OBJECTS)
    if not isinstance(objects, LocalStorage):
        raise web.HTTPNotFound()
    return objects


def _verified(objects: LocalStorage, method: str, key: str, request: web.Request) -> dict[str, str]:
    """The signed parameters of a presigned URL, or 403 (a bad key is a bad signature)."""
    try:
        return objects.verify_signature(method, key, request.query)
    except (SignatureInvalid, InvalidKey) as exc:
        logger.warning("refused presigned {} of {!r}: {}", method, key, exc)
        raise Forbidden(exc.message, code="invalid_signature") from None


@routes.get(URL_PREFIX + "/{key:.+}")
async def get_object(request: web.Request) -> web.StreamResponse:
    objects = _local(request)
    key = request.match_info["key"]
    params = _verified(objects, "GET", key, request)
    info = await objects.head(key)
    if info is None:
        raise NotFound("no such object")
    headers = {"Content-Type": info.content_type}
    if info.etag:
        headers["ETag"] = f'"{info.etag}"'
    if params.get("filename"):
        headers["Content-Disposition"] = f'attachment; filename="{params["filename"]}"'
    return web.FileResponse(objects.path_for(key), headers=headers)


@routes.put(URL_PREFIX + "/{key:.+}")
async def put_object(request: web.Request) -> web.Response:
    objects = _local(request)
    key = request.match_info["key"]
    params = _verified(objects, "PUT", key, request)
    content_type = request.headers.get("Content-Type", "")
    if content_type != params.get("content-type"):
        raise Forbidden("Content-Type does not match the signed one", code="invalid_signature")
    if request.content_length is None:
        raise LengthRequired("Content-Length required")
    if str(request.content_length) != params.get("content-length"):
        raise Forbidden("Content-Length does not match the signed one", code="invalid_signature")
    expected = request.content_length
    incoming = objects.root / ".incoming"
    tmp = incoming / f"{secrets.token_hex(8)}.part"
    received = 0
    try:
        await asyncio.to_thread(incoming.mkdir, parents=True, exist_ok=True)
        f = await asyncio.to_thread(open, tmp, "wb")
        try:
            async for chunk in request.content.iter_chunked(_CHUNK):
                received += len(chunk)
                if received > expected:
                    raise BadRequest("body longer than Content-Length")
                await asyncio.to_thread(f.write, chunk)
            await asyncio.to_thread(f.flush)
        finally:
            await asyncio.to_thread(f.close)
        if received != expected:
            raise BadRequest(f"body is {received} bytes, Content-Length said {expected}")
        ref = await objects.put_file(tmp, key, content_type)
    except StorageError as exc:
        logger.error("presigned PUT of {!r} failed: {}", key, exc)
        raise StorageError("could not store the object") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(tmp.unlink)
    logger.info("stored {} ({} bytes) from a presigned PUT", key, ref.size)
    return web.Response(status=200, headers={"ETag": f'"{ref.etag}"'})
