"""H264 ``profile-level-id`` parsing and negotiation (RFC 6184, section 8.1).

A port of the parts of the ``h264-profile-level-id`` npm package (itself a port
of WebRTC's ``h264_profile_level_id.cc``) that mediasoup's ``ortc`` uses to tell
whether two H264 codecs are compatible: same profile (Baseline, High...), and
which level to answer with.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum
from typing import Any, NamedTuple

from workers.errors import MediasoupTypeError

__all__ = [
    "DEFAULT_PROFILE_LEVEL_ID",
    "Level",
    "Profile",
    "ProfileLevelId",
    "generate_profile_level_id_string_for_answer",
    "is_same_profile",
    "is_same_profile_and_level",
    "parse_profile_level_id",
    "parse_sdp_profile_level_id",
    "profile_level_id_to_string",
    "supported_level",
]


class Profile(IntEnum):
    CONSTRAINED_BASELINE = 1
    BASELINE = 2
    MAIN = 3
    CONSTRAINED_HIGH = 4
    HIGH = 5
    PREDICTIVE_HIGH_444 = 6


class Level(IntEnum):
    """``level_idc`` values; 1b has no value of its own, so it gets 0."""

    L1_B = 0
    L1 = 10
    L1_1 = 11
    L1_2 = 12
    L1_3 = 13
    L2 = 20
    L2_1 = 21
    L2_2 = 22
    L3 = 30
    L3_1 = 31
    L3_2 = 32
    L4 = 40
    L4_1 = 41
    L4_2 = 42
    L5 = 50
    L5_1 = 51
    L5_2 = 52


class ProfileLevelId(NamedTuple):
    profile: Profile
    level: Level


# The spec's default is Baseline level 1, but WebRTC (and so every browser)
# assumes ConstrainedBaseline 3.1 when profile-level-id is absent
# (http://crbug/webrtc/6337); mediasoup follows WebRTC.
DEFAULT_PROFILE_LEVEL_ID = ProfileLevelId(Profile.CONSTRAINED_BASELINE, Level.L3_1)

# For level_idc 11 with profile_idc 0x42, 0x4D or 0x58, constraint_set3 means 1b.
_CONSTRAINT_SET3_FLAG = 0x10


def _bit_pattern(pattern: str) -> tuple[int, int]:
    """(mask, value) for a pattern like ``"x1xx0000"`` where x matches 0 or 1."""
    mask = value = 0
    for char in pattern:
        mask = (mask << 1) | (char != "x")
        value = (value << 1) | (char == "1")
    return mask, value


# (profile_idc, profile_iop pattern, profile), from RFC 6184 section 8.1.
_PROFILE_PATTERNS = [
    (idc, *_bit_pattern(iop), profile)
    for idc, iop, profile in (
        (0x42, "x1xx0000", Profile.CONSTRAINED_BASELINE),
        (0x4D, "1xxx0000", Profile.CONSTRAINED_BASELINE),
        (0x58, "11xx0000", Profile.CONSTRAINED_BASELINE),
        (0x42, "x0xx0000", Profile.BASELINE),
        (0x58, "10xx0000", Profile.BASELINE),
        (0x4D, "0x0x0000", Profile.MAIN),
        (0x64, "00000000", Profile.HIGH),
        (0x64, "00001100", Profile.CONSTRAINED_HIGH),
        (0xF4, "00000000", Profile.PREDICTIVE_HIGH_444),
    )
]

# (max macroblocks per second, max macroblock frame size, level), from
# ITU-T H.264 (02/2016) Table A-1, lowest level first.
_LEVEL_CONSTRAINTS = [
    (1485, 99, Level.L1),
    (1485, 99, Level.L1_B),
    (3000, 396, Level.L1_1),
    (6000, 396, Level.L1_2),
    (11880, 396, Level.L1_3),
    (11880, 396, Level.L2),
    (19800, 792, Level.L2_1),
    (20250, 1620, Level.L2_2),
    (40500, 1620, Level.L3),
    (108000, 3600, Level.L3_1),
    (216000, 5120, Level.L3_2),
    (245760, 8192, Level.L4),
    (245760, 8192, Level.L4_1),
    (522240, 8704, Level.L4_2),
    (589824, 22080, Level.L5),
    (983040, 36864, Level.L5_1),
    (2073600, 36864, Level.L5_2),
]

_PROFILE_IDC_IOP_STRINGS = {
    Profile.CONSTRAINED_BASELINE: "42e0",
    Profile.BASELINE: "4200",
    Profile.MAIN: "4d00",
    Profile.CONSTRAINED_HIGH: "640c",
    Profile.HIGH: "6400",
    Profile.PREDICTIVE_HIGH_444: "f400",
}

# Level 1b is spelled with the constraint_set3 flag, and only exists for these.
_LEVEL_1B_STRINGS = {
    Profile.CONSTRAINED_BASELINE: "42f00b",
    Profile.BASELINE: "42100b",
    Profile.MAIN: "4d100b",
}

_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
_VALID_LEVEL_IDCS = frozenset(level.value for level in Level) - {Level.L1_B}


def parse_profile_level_id(value: Any) -> ProfileLevelId | None:
    """Parse a ``profile-level-id`` (3 hex bytes); ``None`` if unrecognised."""
    if not isinstance(value, str) or len(value) != 6 or not _HEX_DIGITS.issuperset(value):
        return None
    numeric = int(value, 16)
    if numeric == 0:
        return None

    level_idc = numeric & 0xFF
    profile_iop = (numeric >> 8) & 0xFF
    profile_idc = (numeric >> 16) & 0xFF

    if level_idc == Level.L1_1:
        level = Level.L1_B if profile_iop & _CONSTRAINT_SET3_FLAG else Level.L1_1
    elif level_idc in _VALID_LEVEL_IDCS:
        level = Level(level_idc)
    else:
        return None

    for pattern_idc, mask, masked_value, profile in _PROFILE_PATTERNS:
        if profile_idc == pattern_idc and profile_iop & mask == masked_value:
            return ProfileLevelId(profile, level)
    return None


def profile_level_id_to_string(profile_level_id: ProfileLevelId) -> str | None:
    """The canonical 3-hex-byte string, or ``None`` if it cannot be expressed."""
    profile, level = profile_level_id
    if level == Level.L1_B:
        return _LEVEL_1B_STRINGS.get(profile)
    profile_idc_iop = _PROFILE_IDC_IOP_STRINGS.get(profile)
    if profile_idc_iop is None:
        return None
    return f"{profile_idc_iop}{int(level):02x}"


def parse_sdp_profile_level_id(params: Mapping[str, Any] | None = None) -> ProfileLevelId | None:
    """The profile-level-id of codec parameters: the default one if absent,
    ``None`` if present but invalid."""
    value = (params or {}).get("profile-level-id")
    return parse_profile_level_id(value) if value else DEFAULT_PROFILE_LEVEL_ID


def is_same_profile(params1: Mapping[str, Any] | None = None, params2: Mapping[str, Any] | None = None) -> bool:
    """Whether two codec parameter sets have the same H264 profile (levels may differ)."""
    profile_level_id_1 = parse_sdp_profile_level_id(params1)
    profile_level_id_2 = parse_sdp_profile_level_id(params2)
    return (
        profile_level_id_1 is not None
        and profile_level_id_2 is not None
        and profile_level_id_1.profile == profile_level_id_2.profile
    )


def is_same_profile_and_level(
    params1: Mapping[str, Any] | None = None, params2: Mapping[str, Any] | None = None
) -> bool:
    """Whether two codec parameter sets have the same H264 profile and level."""
    profile_level_id_1 = parse_sdp_profile_level_id(params1)
    profile_level_id_2 = parse_sdp_profile_level_id(params2)
    return profile_level_id_1 is not None and profile_level_id_1 == profile_level_id_2


def _is_level_asymmetry_allowed(params: Mapping[str, Any]) -> bool:
    value = params.get("level-asymmetry-allowed")
    return value == 1 or value == "1"  # True, 1 or "1" (True == 1 in Python)


def _is_less_level(a: Level, b: Level) -> bool:
    """``a < b`` where 1b sits between 1 and 1.1."""
    if a == Level.L1_B:
        return b not in (Level.L1, Level.L1_B)
    if b == Level.L1_B:
        return a != Level.L1
    return a < b


def generate_profile_level_id_string_for_answer(
    local_supported_params: Mapping[str, Any] | None = None,
    remote_offered_params: Mapping[str, Any] | None = None,
) -> str | None:
    """The profile-level-id to answer with, given local and remote parameters.

    Both sides must have the same profile (check ``is_same_profile`` first);
    raises ``MediasoupTypeError`` otherwise or if either value is invalid.
    Returns ``None`` when neither side has a profile-level-id (both use the
    default). The answer level is the local one if both sides allow level
    asymmetry, else the lower of the two.
    """
    local_params = local_supported_params or {}
    remote_params = remote_offered_params or {}
    if not local_params.get("profile-level-id") and not remote_params.get("profile-level-id"):
        return None

    local_profile_level_id = parse_sdp_profile_level_id(local_params)
    remote_profile_level_id = parse_sdp_profile_level_id(remote_params)
    if local_profile_level_id is None:
        raise MediasoupTypeError("invalid local_profile_level_id")
    if remote_profile_level_id is None:
        raise MediasoupTypeError("invalid remote_profile_level_id")
    if local_profile_level_id.profile != remote_profile_level_id.profile:
        raise MediasoupTypeError("H264 Profile mismatch")

    level_asymmetry_allowed = _is_level_asymmetry_allowed(local_params) and _is_level_asymmetry_allowed(remote_params)
    local_level = local_profile_level_id.level
    remote_level = remote_profile_level_id.level
    min_level = local_level if _is_less_level(local_level, remote_level) else remote_level
    answer_level = local_level if level_asymmetry_allowed else min_level
    return profile_level_id_to_string(ProfileLevelId(local_profile_level_id.profile, answer_level))


def supported_level(max_frame_pixel_count: int, max_fps: float) -> Level | None:
    """The highest level a decoder handling frames up to ``max_frame_pixel_count``
    pixels at ``max_fps`` frames per second is guaranteed to support."""
    pixels_per_macroblock = 16 * 16
    for max_macroblocks_per_second, max_frame_size, level in reversed(_LEVEL_CONSTRAINTS):
        if (
            max_frame_size * pixels_per_macroblock <= max_frame_pixel_count
            and max_macroblocks_per_second <= max_fps * max_frame_size
        ):
            return level
    return None
