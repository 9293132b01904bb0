"""Errors raised by the mediasoup layer.

They mirror mediasoup's own error classes (``node/lib/errors.js``) so that
callers can tell apart a request the worker refused (``MediasoupError``), a
request whose arguments are wrong (``MediasoupTypeError``, mediasoup's
``TypeError`` from the worker or from ``ortc`` validation), a feature mediasoup
does not support (``UnsupportedError``) and an operation on something already
closed (``InvalidStateError``).
"""

from __future__ import annotations


class MediasoupError(Exception):
    """A request failed in the worker or in the Python layer."""


class MediasoupTypeError(MediasoupError, TypeError):
    """Invalid arguments: mediasoup's ``TypeError`` (worker or ``ortc``)."""


class UnsupportedError(MediasoupError):
    """Something mediasoup does not support (e.g. an unknown codec)."""


class InvalidStateError(MediasoupError):
    """The entity, channel or worker is closed."""


class NotFoundError(MediasoupError):
    """The worker does not know the entity a request names."""


class ChannelTimeoutError(MediasoupError):
    """The worker did not answer a request in time."""
