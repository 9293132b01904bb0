"""Parsing of scalability modes (``"L1T3"``, ``"S3T3"``, ``"L3T3_KEY"``...).

A port of mediasoup's ``scalabilityModesUtils.ts``: the number of spatial and
temporal layers an encoding carries, used to describe a Consumer's layers.
"""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = ["ScalabilityMode", "parse_scalability_mode"]

_SCALABILITY_MODE = re.compile(r"[LS]([1-9]\d?)T([1-9]\d?)(_KEY)?")


class ScalabilityMode(NamedTuple):
    spatial_layers: int
    temporal_layers: int
    ksvc: bool


_SINGLE_LAYER = ScalabilityMode(spatial_layers=1, temporal_layers=1, ksvc=False)


def parse_scalability_mode(scalability_mode: str | None = None) -> ScalabilityMode:
    """Layers of a scalability mode; one spatial and one temporal layer if unknown.

    Like mediasoup, only the start of the string must match (``"L2T3h"`` is
    L2T3) and anything unparsable means a single layer.
    """
    match = _SCALABILITY_MODE.match(scalability_mode or "")
    if match is None:
        return _SINGLE_LAYER
    return ScalabilityMode(
        spatial_layers=int(match.group(1)),
        temporal_layers=int(match.group(2)),
        ksvc=match.group(3) is not None,
    )
