"""Errors raised by the stores."""

from __future__ import annotations

__all__ = ["StoreError", "StoreUnavailable"]


class StoreError(Exception):
    """A store operation failed (the record was not written / could not be read)."""


class StoreUnavailable(StoreError):
    """The backend cannot be reached or refused us (start-up, or a write that could
    not be acknowledged in time). The message says which server and why, with
    credentials masked."""
