"""Unit tests of ``workers.h264_profile_level_id``, ported from the
``h264-profile-level-id`` npm package's own tests (``src/tests/test.ts``)."""

from __future__ import annotations

import pytest

from workers.errors import MediasoupTypeError
from workers.h264_profile_level_id import (
    Level,
    Profile,
    ProfileLevelId,
    generate_profile_level_id_string_for_answer,
    is_same_profile,
    is_same_profile_and_level,
    parse_profile_level_id,
    parse_sdp_profile_level_id,
    profile_level_id_to_string,
    supported_level,
)


def _parsed(value: str) -> ProfileLevelId:
    """``parse_profile_level_id`` of a value the test knows is valid."""
    parsed = parse_profile_level_id(value)
    assert parsed is not None, value
    return parsed


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        " 42e01f",
        "4242e01f",
        "e01f",
        "gggggg",
        # Invalid level.
        "42e000",
        "42e00f",
        "42e0ff",
        # Invalid profile.
        "42e11f",
        "58601f",
        "64e01f",
        "000000",
        42,
    ],
)
def test_parsing_invalid(value):
    assert parse_profile_level_id(value) is None


@pytest.mark.parametrize(
    ("value", "level"),
    [
        ("42e01f", Level.L3_1),
        ("42e00b", Level.L1_1),
        ("42f00b", Level.L1_B),
        ("42C02A", Level.L4_2),
        ("640c34", Level.L5_2),
    ],
)
def test_parsing_level(value, level):
    assert _parsed(value).level == level


@pytest.mark.parametrize(
    ("value", "profile"),
    [
        ("42e01f", Profile.CONSTRAINED_BASELINE),
        ("42C02A", Profile.CONSTRAINED_BASELINE),
        ("4de01f", Profile.CONSTRAINED_BASELINE),
        ("58f01f", Profile.CONSTRAINED_BASELINE),
        ("42a01f", Profile.BASELINE),
        ("58A01F", Profile.BASELINE),
        ("4D401f", Profile.MAIN),
        ("64001f", Profile.HIGH),
        ("640c1f", Profile.CONSTRAINED_HIGH),
        ("f4001f", Profile.PREDICTIVE_HIGH_444),
    ],
)
def test_parsing_profile(value, profile):
    assert _parsed(value).profile == profile


@pytest.mark.parametrize(
    ("profile_level_id", "expected"),
    [
        (ProfileLevelId(Profile.CONSTRAINED_BASELINE, Level.L3_1), "42e01f"),
        (ProfileLevelId(Profile.BASELINE, Level.L1), "42000a"),
        (ProfileLevelId(Profile.MAIN, Level.L3_1), "4d001f"),
        (ProfileLevelId(Profile.CONSTRAINED_HIGH, Level.L4_2), "640c2a"),
        (ProfileLevelId(Profile.HIGH, Level.L4_2), "64002a"),
        # Level 1b.
        (ProfileLevelId(Profile.CONSTRAINED_BASELINE, Level.L1_B), "42f00b"),
        (ProfileLevelId(Profile.BASELINE, Level.L1_B), "42100b"),
        (ProfileLevelId(Profile.MAIN, Level.L1_B), "4d100b"),
    ],
)
def test_to_string(profile_level_id, expected):
    assert profile_level_id_to_string(profile_level_id) == expected


@pytest.mark.parametrize(
    ("value", "canonical"),
    [
        ("42e01f", "42e01f"),
        ("42E01F", "42e01f"),
        ("4d100b", "4d100b"),
        ("4D100B", "4d100b"),
        ("640c2a", "640c2a"),
        ("640C2A", "640c2a"),
    ],
)
def test_to_string_round_trip(value, canonical):
    assert profile_level_id_to_string(_parsed(value)) == canonical


@pytest.mark.parametrize(
    "profile_level_id",
    [
        ProfileLevelId(Profile.HIGH, Level.L1_B),
        ProfileLevelId(Profile.CONSTRAINED_HIGH, Level.L1_B),
        ProfileLevelId(255, Level.L3_1),  # type: ignore[arg-type]  # not a Profile, on purpose
    ],
)
def test_to_string_invalid(profile_level_id):
    assert profile_level_id_to_string(profile_level_id) is None


def test_parse_sdp_profile_level_id_defaults_to_constrained_baseline_3_1():
    assert parse_sdp_profile_level_id() == ProfileLevelId(Profile.CONSTRAINED_BASELINE, Level.L3_1)
    assert parse_sdp_profile_level_id({"profile-level-id": ""}) == ProfileLevelId(
        Profile.CONSTRAINED_BASELINE, Level.L3_1
    )


def test_parse_sdp_profile_level_id():
    assert parse_sdp_profile_level_id({"profile-level-id": "640c2a"}) == ProfileLevelId(
        Profile.CONSTRAINED_HIGH, Level.L4_2
    )
    assert parse_sdp_profile_level_id({"profile-level-id": "foobar"}) is None


def test_is_same_profile():
    assert is_same_profile({"foo": "foo"}, {"bar": "bar"})
    assert is_same_profile({"profile-level-id": "42e01f"}, {"profile-level-id": "42C02A"})
    assert is_same_profile({"profile-level-id": "42a01f"}, {"profile-level-id": "58A01F"})
    assert is_same_profile({"profile-level-id": "42e01f"}, None)


def test_is_not_same_profile():
    assert not is_same_profile(None, {"profile-level-id": "4d001f"})
    assert not is_same_profile({"profile-level-id": "42a01f"}, {"profile-level-id": "640c1f"})
    assert not is_same_profile({"profile-level-id": "42000a"}, {"profile-level-id": "64002a"})
    assert not is_same_profile({"profile-level-id": "invalid"}, {"profile-level-id": "invalid"})


def test_is_same_profile_and_level():
    assert is_same_profile_and_level({"profile-level-id": "42e01f"}, {})
    assert not is_same_profile_and_level({"profile-level-id": "42e01f"}, {"profile-level-id": "42e015"})


def test_generate_profile_level_id_for_answer_empty():
    assert generate_profile_level_id_string_for_answer(None, None) is None


def test_generate_profile_level_id_for_answer_level_symmetry_capped():
    low_level = {"profile-level-id": "42e015"}
    high_level = {"profile-level-id": "42e01f"}
    assert generate_profile_level_id_string_for_answer(low_level, high_level) == "42e015"
    assert generate_profile_level_id_string_for_answer(high_level, low_level) == "42e015"


@pytest.mark.parametrize("flag", ["1", 1, True])
def test_generate_profile_level_id_for_answer_constrained_baseline_level_asymmetry(flag):
    local_params = {"profile-level-id": "42e01f", "level-asymmetry-allowed": flag}
    remote_params = {"profile-level-id": "42e015", "level-asymmetry-allowed": flag}
    assert generate_profile_level_id_string_for_answer(local_params, remote_params) == "42e01f"


def test_generate_profile_level_id_for_answer_level_1b_is_between_1_and_1_1():
    level_1b = {"profile-level-id": "42f00b"}
    assert generate_profile_level_id_string_for_answer(level_1b, {"profile-level-id": "42e00a"}) == "42e00a"
    assert generate_profile_level_id_string_for_answer(level_1b, {"profile-level-id": "42e00b"}) == "42f00b"


@pytest.mark.parametrize(
    ("local_params", "remote_params", "message"),
    [
        ({"profile-level-id": "invalid"}, {}, "invalid local_profile_level_id"),
        ({}, {"profile-level-id": "invalid"}, "invalid remote_profile_level_id"),
        ({"profile-level-id": "42e01f"}, {"profile-level-id": "640c1f"}, "H264 Profile mismatch"),
    ],
)
def test_generate_profile_level_id_for_answer_raises(local_params, remote_params, message):
    with pytest.raises(MediasoupTypeError, match=message):
        generate_profile_level_id_string_for_answer(local_params, remote_params)


def test_supported_level():
    assert supported_level(640 * 480, 25) == Level.L2_1
    assert supported_level(1280 * 720, 30) == Level.L3_1
    assert supported_level(1920 * 1280, 60) == Level.L4_2
    assert supported_level(1, 1) is None
