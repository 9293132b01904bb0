"""Errors raised by the stores (the chat + meetings database).

Both are :class:`~control.errors.Unavailable` (503 ``store_unavailable``): what a
client sees when the database did not answer is "try again"; the message names the
server with credentials masked, never a secret (the chat and meetings services log
it and answer clients a message of their own).
"""

from __future__ import annotations

from control.errors import Unavailable

__all__ = ["StoreError", "StoreUnavailable"]


class StoreError(Unavailable):
    """A store operation failed (the record was not written / could not be read)."""

    default_code = "store_unavailable"


class StoreUnavailable(StoreError):
    """The backend cannot be reached or refused us (start-up, or a write that could
    not be acknowledged in time). The message says which server and why, with
    credentials masked."""
