from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kollrefund.errors import UsageError
from kollrefund.money import (
    SUPPORTED,
    Money,
    check_stripe_amount,
    exponent,
    normalize_currency,
    parse_positive,
)


@pytest.mark.parametrize(
    ("text", "currency", "minor"),
    [
        ("12.34", "usd", 1234),
        ("12", "usd", 1200),
        ("0.01", "USD", 1),
        ("1500", "jpy", 1500),
        ("1500.0", "jpy", 1500),
        ("10.250", "kwd", 10250),
        ("1.5", "bhd", 1500),
        ("5", "isk", 500),
        ("12.50", "huf", 1250),
        (" 7.00 ", "eur", 700),
    ],
)
def test_parse_exact(text: str, currency: str, minor: int) -> None:
    assert Money.parse(text, currency) == Money(minor, currency.lower())


@pytest.mark.parametrize(
    ("text", "currency"),
    [
        ("10.001", "usd"),
        ("12.5", "jpy"),
        ("1.2345", "kwd"),
        ("abc", "usd"),
        ("", "usd"),
        ("NaN", "usd"),
        ("Infinity", "usd"),
        ("1,00", "usd"),
        ("0x10", "usd"),
    ],
)
def test_parse_refuses_inexact_or_garbage(text: str, currency: str) -> None:
    with pytest.raises(UsageError):
        Money.parse(text, currency)


def test_unknown_currency() -> None:
    with pytest.raises(UsageError, match="Unknown currency"):
        normalize_currency("zzz")


def test_exponents_follow_stripe() -> None:
    assert exponent("jpy") == exponent("krw") == exponent("vnd") == exponent("ugx") == 0
    assert exponent("kwd") == exponent("bhd") == exponent("jod") == exponent("omr") == exponent("tnd") == 3
    # Stripe's special cases stay two-decimal in the API
    assert exponent("isk") == exponent("huf") == exponent("twd") == exponent("usd") == 2


def test_format_per_currency() -> None:
    assert Money(1234, "usd").format() == "12.34"
    assert Money(5, "usd").format() == "0.05"
    assert Money(-5, "usd").format() == "-0.05"
    assert Money(1500, "jpy").format() == "1500"
    assert Money(10250, "kwd").format() == "10.250"
    assert Money(1234, "usd").display() == "12.34 USD"


def test_money_refuses_float_and_mixed_currencies() -> None:
    with pytest.raises(TypeError):
        Money(1.5, "usd")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Money(1, "usd") + Money(1, "eur")
    with pytest.raises(ValueError):
        assert Money(1, "usd") < Money(1, "eur")


def test_stripe_steps() -> None:
    check_stripe_amount(Money(5120, "kwd"))
    with pytest.raises(UsageError, match=r"steps of 0\.010"):
        check_stripe_amount(Money(5124, "kwd"))
    check_stripe_amount(Money(500, "isk"))
    with pytest.raises(UsageError):
        check_stripe_amount(Money(510, "isk"))
    check_stripe_amount(Money(1, "usd"))


@pytest.mark.parametrize("text", ["0", "-5", "0.00", "-0.01"])
def test_parse_positive_refuses_zero_and_negative(text: str) -> None:
    with pytest.raises(UsageError, match="more than zero"):
        parse_positive(text, "usd")


@given(st.integers(min_value=-(10**15), max_value=10**15), st.sampled_from(sorted(SUPPORTED)))
def test_format_parse_round_trip(minor: int, currency: str) -> None:
    money = Money(minor, currency)
    assert Money.parse(money.format(), currency) == money
    assert money.to_decimal() == Decimal(money.format())


@given(st.integers(0, 10**9), st.integers(0, 10**9))
def test_arithmetic_is_exact(a: int, b: int) -> None:
    assert (Money(a, "usd") + Money(b, "usd")).minor == a + b
    assert (Money(a, "usd") - Money(b, "usd")).minor == a - b
