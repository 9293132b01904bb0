"""Wire shapes: mediasoup's camelCase JSON as plain Python data.

The API accepts either plain dicts (as they come from mediasoup-client,
pymediasoup or JSON) or the pydantic models of ``workers.rtp_parameters``;
internally everything is a dict so it can be validated, normalised in place
(as mediasoup's ``ortc`` does) and serialised without another conversion.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


def as_wire(value: Any) -> Any:
    """A pydantic model becomes its camelCase JSON dict; anything else is returned as is."""
    if isinstance(value, BaseModel):
        return value.model_dump(by_alias=True, exclude_none=True)
    if isinstance(value, list):
        return [as_wire(item) for item in value]
    return value


def clone(value: Any) -> Any:
    """Deep copy of JSON-like data (much faster than ``copy.deepcopy``)."""
    if isinstance(value, dict):
        return {key: clone(item) for key, item in value.items()}
    if isinstance(value, list):
        return [clone(item) for item in value]
    return value
