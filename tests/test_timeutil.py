"""Timestamps: what the API accepts, what it answers, and that the two agree."""

from __future__ import annotations

import pytest

from chronos.timeutil import now_ms, parse_timestamp, to_iso

NEW_YEAR_2026 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


@pytest.mark.parametrize(
    "value",
    [
        "2026-01-01T00:00:00Z",
        "2026-01-01T00:00:00z",
        "2026-01-01T00:00:00.000Z",
        "2026-01-01T02:00:00+02:00",
        "2025-12-31T19:00:00-05:00",
        "2026-01-01T00:00:00",  # naive means UTC
        NEW_YEAR_2026,
        float(NEW_YEAR_2026),
        str(NEW_YEAR_2026),
        f" {NEW_YEAR_2026} ",
    ],
)
def test_parse_timestamp_accepts(value: object) -> None:
    assert parse_timestamp(value) == NEW_YEAR_2026


def test_parse_timestamp_keeps_milliseconds() -> None:
    assert parse_timestamp("2026-01-01T00:00:00.001Z") == NEW_YEAR_2026 + 1
    assert parse_timestamp("2004-04-17T19:04:30.370Z") == 1_082_228_670_370


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (True, "boolean"),
        (False, "boolean"),
        ("yesterday", "neither ISO 8601"),
        ("", "neither ISO 8601"),
        ("NaN", "neither ISO 8601"),
        (float("nan"), "finite"),
        (float("inf"), "finite"),
        (None, "ISO 8601 string or epoch milliseconds"),
        ([NEW_YEAR_2026], "ISO 8601 string or epoch milliseconds"),
        (-1, "outside 1970..9999"),
        ("-1", "outside 1970..9999"),
        (253_402_300_800_000, "outside 1970..9999"),
        ("1969-12-31T23:59:59Z", "outside 1970..9999"),
        ("9999-12-31T23:59:59-01:00", "outside 1970..9999"),
        ("0001-01-01T00:00:00+01:00", "outside 1970..9999"),
    ],
)
def test_parse_timestamp_rejects_with_a_helpful_message(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_timestamp(value)


def test_the_error_quotes_only_the_start_of_long_garbage() -> None:
    with pytest.raises(ValueError) as info:
        parse_timestamp("x" * 1000)
    assert len(str(info.value)) < 200


def test_to_iso_is_utc_with_milliseconds_and_z() -> None:
    assert to_iso(NEW_YEAR_2026) == "2026-01-01T00:00:00.000Z"
    assert to_iso(NEW_YEAR_2026 + 7) == "2026-01-01T00:00:00.007Z"
    assert to_iso(0) == "1970-01-01T00:00:00.000Z"
    assert to_iso(253_402_300_799_999) == "9999-12-31T23:59:59.999Z"
    assert to_iso(None) is None


@pytest.mark.parametrize(
    "ms",
    [0, 1, 999, NEW_YEAR_2026, NEW_YEAR_2026 + 1, NEW_YEAR_2026 + 999, 1_082_228_670_370,
     2_188_008_757_765, 16_831_260_082, 253_402_300_799_999],
)  # fmt: skip
def test_to_iso_round_trips(ms: int) -> None:
    assert parse_timestamp(to_iso(ms)) == ms


def test_round_trip_holds_for_every_millisecond_of_a_second_in_many_years() -> None:
    for second in range(0, 253_402_300_799_999, 9_876_543_211_000):
        for ms in range(second, second + 1000):
            assert parse_timestamp(to_iso(ms)) == ms, to_iso(ms)


def test_now_ms_is_epoch_milliseconds() -> None:
    assert NEW_YEAR_2026 - 365 * 86_400_000 < now_ms() < 253_402_300_799_999
