"""Durations: one grammar for ``publish --ttl`` and the configuration file."""

from __future__ import annotations

import math

import pytest

from meshnode.core.durations import MAX_MS, DurationError, checked_ms, parse_ms, seconds_ms


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("90", 90_000),
        ("1.5", 1_500),
        ("45s", 45_000),
        ("30m", 1_800_000),
        ("3h", 10_800_000),
        ("1.5h", 5_400_000),
        (".5m", 30_000),
        ("2d", 172_800_000),
        ("1w", 604_800_000),
        ("1h30m", 5_400_000),
        ("500ms", 500),
        ("5m30s250ms", 330_250),
        (" 3H ", 10_800_000),
        ("0.0006s", 1),
    ],
)
def test_a_duration_is_seconds_or_numbers_with_units(text: str, ms: int) -> None:
    assert parse_ms(text) == ms


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("soon", "is a duration"),
        ("", "is a duration"),
        ("3 days", "is a duration"),
        ("1h 30m", "is a duration"),
        ("1.5.5s", "is a duration"),
        ("5x", "is a duration"),
        ("\u0661\u0662s", "is a duration"),
        ("-soon", "is a duration"),
        ("-5m", "must be a positive duration"),
        ("0", "must be a positive duration"),
        ("0s", "must be a positive duration"),
        ("0.0001s", "must be at least 1 ms"),
        ("101y", "is a duration"),
        ("5300w", "must be at most 100 years"),
        ("9" * 60 + "w", "must be at most 100 years"),
    ],
)
def test_what_is_not_a_duration_is_told_why(text: str, message: str) -> None:
    with pytest.raises(DurationError, match=message) as refused:
        parse_ms(text)
    assert repr(text) in str(refused.value)  # the user sees what they wrote


@pytest.mark.parametrize(
    ("ms", "message"),
    [
        (math.nan, "finite"),
        (math.inf, "finite"),
        (-math.inf, "finite"),
        (MAX_MS + 1, "at most 100 years"),
    ],
)
def test_a_number_of_milliseconds_is_checked_the_same_way(ms: float, message: str) -> None:
    with pytest.raises(DurationError, match=message):
        checked_ms(ms, ms)


def test_text_far_longer_than_any_duration_is_refused_before_it_is_parsed() -> None:
    with pytest.raises(DurationError, match="got 100,001 characters"):
        parse_ms("9" * 100_000 + "x")


def test_the_longest_duration_is_a_hundred_years() -> None:
    assert checked_ms(MAX_MS, MAX_MS) == MAX_MS == 100 * 365 * 86_400_000


@pytest.mark.parametrize(
    ("seconds", "message"),
    [
        (math.nan, "finite"),
        (math.inf, "finite"),
        (1e308, "at most 100 years"),  # not "infinite", though 1e308 * 1000 would be
        (10**400, "at most 100 years"),  # an int past any float
        (-5, "positive"),
        (0, "positive"),
    ],
)
def test_a_number_of_seconds_is_checked_before_it_is_scaled(seconds: float, message: str) -> None:
    with pytest.raises(DurationError, match=message):
        seconds_ms(seconds, seconds)


def test_a_number_of_seconds_may_have_a_fraction() -> None:
    assert seconds_ms(1.5, 1.5) == 1500 and seconds_ms(90, 90) == 90_000
