"""The worker layer's exceptions as the domain errors of :mod:`control.errors`.

A request that reaches a media worker may fail there; :func:`worker_errors`
turns that into what the client is told (the protoo ``errorCode`` and the REST
status are the same numbers as before: 400, 404, 503, 504).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from control.errors import BadRequest, NotFound, ParleyError, Unavailable, UpstreamTimeout
from workers.errors import (
    ChannelTimeoutError,
    InvalidStateError,
    MediasoupError,
    MediasoupTypeError,
    NotFoundError,
    UnsupportedError,
)

__all__ = ["worker_errors"]


@contextlib.contextmanager
def worker_errors(what: str) -> Iterator[None]:
    """Raise the worker layer's exceptions inside as ParleyErrors about ``what``."""
    try:
        yield
    except ParleyError:
        raise
    except (MediasoupTypeError, UnsupportedError) as error:
        raise BadRequest(f"{what}: {error}") from None
    except NotFoundError as error:
        raise NotFound(f"{what}: {error}") from None
    except ChannelTimeoutError as error:
        raise UpstreamTimeout(f"{what}: media worker did not answer ({error})") from None
    except InvalidStateError as error:
        raise Unavailable(f"{what}: media worker unavailable ({error})") from None
    except MediasoupError as error:  # the worker refused the request
        raise BadRequest(f"{what}: {error}") from None
