"""Wire shapes: mediasoup's camelCase JSON as plain Python data.

The API accepts either plain dicts (as they come from mediasoup-client,
pymediasoup or JSON) or the pydantic models of ``workers.rtp_parameters``;
internally everything is a dict so it can be validated, normalised in place
(as mediasoup's ``ortc`` does) and serialised without another conversion.
"""

from __future__ import annotations

import marshal
import os
from typing import Any, TypeVar

from pydantic import BaseModel


def as_wire(value: Any) -> Any:
    """A pydantic model becomes its camelCase JSON dict; anything else is returned as is."""
    if isinstance(value, BaseModel):
        return value.model_dump(by_alias=True, exclude_none=True)
    if isinstance(value, list):
        return [as_wire(item) for item in value]
    return value


_T = TypeVar("_T")


def clone(value: _T) -> _T:
    """Deep copy of JSON-like data (much faster than ``copy.deepcopy``).

    A ``marshal`` round trip copies in C. Format version 2 writes no
    back-references, so a dict or list reached twice comes back as two copies,
    as with the recursive copy. Anything marshal cannot copy (a model, a dict
    subclass...) takes the recursive copy, which shares such objects.
    """
    try:
        copied: _T = marshal.loads(marshal.dumps(value, 2))  # type: ignore[arg-type]  # refused: recursive copy
    except ValueError:
        copied = _clone_recursive(value)
    return copied


def _clone_recursive(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _clone_recursive(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_clone_recursive(item) for item in value]
    return value


# The RFC 4122 variant nibble (binary 10xx) from any hex digit's two low bits.
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def new_id() -> str:
    """A random (version 4) UUID as text, like ``str(uuid.uuid4())``.

    Every router, transport, producer and consumer gets one; this formats 16
    random bytes directly, without building a ``uuid.UUID`` (a third of the cost).
    """
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"
