"""SRTP wire models (PlainTransport/PipeTransport keys) and their FlatBuffers form.

Mirrors mediasoup's ``srtpParametersTypes.d.ts`` and ports
``srtpParametersFbsUtils.ts`` (on mediasoup JSON dicts, like ``ortc``).
"""

from __future__ import annotations

from typing import Any, Literal

import flatbuffers
from pydantic import BaseModel

from workers.errors import MediasoupTypeError
from workers.fbs import FBS  # noqa: F401  (puts the generated bindings on sys.path)
from workers.rtp_parameters import WireModel

import FBS.SrtpParameters.SrtpParameters as _FbsSrtpParameters
from FBS.SrtpParameters.SrtpCryptoSuite import SrtpCryptoSuite as _FbsCryptoSuite

__all__ = [
    "SrtpCryptoSuite",
    "SrtpParameters",
    "crypto_suite_from_fbs",
    "crypto_suite_to_fbs",
    "parse_srtp_parameters",
    "serialize_srtp_parameters",
]

SrtpCryptoSuite = Literal[
    "AEAD_AES_256_GCM",
    "AEAD_AES_128_GCM",
    "AES_CM_128_HMAC_SHA1_80",
    "AES_CM_128_HMAC_SHA1_32",
]

_SUITE_TO_FBS: dict[str, int] = {
    "AEAD_AES_256_GCM": _FbsCryptoSuite.AEAD_AES_256_GCM,
    "AEAD_AES_128_GCM": _FbsCryptoSuite.AEAD_AES_128_GCM,
    "AES_CM_128_HMAC_SHA1_80": _FbsCryptoSuite.AES_CM_128_HMAC_SHA1_80,
    "AES_CM_128_HMAC_SHA1_32": _FbsCryptoSuite.AES_CM_128_HMAC_SHA1_32,
}
_SUITE_FROM_FBS: dict[int, str] = {value: name for name, value in _SUITE_TO_FBS.items()}


class SrtpParameters(WireModel):
    """An SRTP crypto suite and its base64 master key (+ salt)."""

    crypto_suite: SrtpCryptoSuite
    key_base64: str


def crypto_suite_to_fbs(crypto_suite: str) -> int:
    try:
        return _SUITE_TO_FBS[crypto_suite]
    except KeyError:
        raise MediasoupTypeError(f"invalid SrtpCryptoSuite: {crypto_suite}") from None


def crypto_suite_from_fbs(value: int) -> SrtpCryptoSuite:
    return _SUITE_FROM_FBS[value]  # type: ignore[return-value]


def parse_srtp_parameters(fbs_params: Any) -> dict[str, Any]:
    """Mediasoup JSON ``SrtpParameters`` from an ``FBS.SrtpParameters.SrtpParameters``."""
    return {
        "cryptoSuite": crypto_suite_from_fbs(fbs_params.CryptoSuite()),
        "keyBase64": fbs_params.KeyBase64().decode(),
    }


def serialize_srtp_parameters(builder: flatbuffers.Builder, params: Any) -> int:
    """An ``FBS.SrtpParameters.SrtpParameters`` table from mediasoup JSON (or a
    model); returns its offset."""
    if isinstance(params, BaseModel):
        params = params.model_dump(by_alias=True, exclude_none=True)
    crypto_suite = crypto_suite_to_fbs(params["cryptoSuite"])
    key_offset = builder.CreateString(params["keyBase64"])
    _FbsSrtpParameters.SrtpParametersStart(builder)
    _FbsSrtpParameters.SrtpParametersAddCryptoSuite(builder, crypto_suite)
    _FbsSrtpParameters.SrtpParametersAddKeyBase64(builder, key_offset)
    offset: int = _FbsSrtpParameters.SrtpParametersEnd(builder)
    return offset
