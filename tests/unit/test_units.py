"""Durations typed by users and the way numbers are shown back."""

import pytest

from latscope.errors import ConfigError
from latscope.units import duration_words, format_duration, format_us, parse_duration_ns


@pytest.mark.parametrize(
    ("text", "ns"),
    [("1ms", 1_000_000), ("250us", 250_000), ("60s", 60_000_000_000), ("5m", 300_000_000_000),
     ("1.5s", 1_500_000_000), ("0.1ms", 100_000), ("100", 100_000_000_000), ("2h", 7_200_000_000_000),
     ("7ns", 7), (" 3 ms ", 3_000_000), ("250µs", 250_000)],
)
def test_parse_duration(text: str, ns: int) -> None:
    """Every unit users type converts to exact integer nanoseconds."""
    assert parse_duration_ns(text) == ns


@pytest.mark.parametrize("text", ["", "ms", "-1ms", "1 parsec", "1e3", "1..2s", "abc"])
def test_parse_duration_rejects(text: str) -> None:
    """Garbage is a ConfigError with the offending text in the message."""
    with pytest.raises(ConfigError, match="invalid duration"):
        parse_duration_ns(text)


def test_duration_words_rounds_to_one_unit() -> None:
    """The summary's '(~= 1minute)' wording rounds to the nearest whole unit."""
    assert duration_words(59_999_000_000) == "1minute"
    assert duration_words(2_999_000_000) == "3seconds"
    assert duration_words(150 * 60 * 10**9) == "3hours"
    assert duration_words(1_000_000_000) == "1second"
    assert duration_words(5_000_000) == "5milliseconds"


def test_format_us_three_decimals() -> None:
    """Human output is microseconds with three decimals."""
    assert format_us(62_380) == "62.380"
    assert format_us(None) == "-"


def test_format_duration_round_trips() -> None:
    """format_duration gives back a string parse_duration_ns reads as the same value."""
    for ns in (1_000_000, 250_000, 60_000_000_000, 1_500, 7):
        assert parse_duration_ns(format_duration(ns)) == ns
