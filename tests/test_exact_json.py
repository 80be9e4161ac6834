from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kollrefund import exact_json


def test_decimals_are_written_as_exact_numbers() -> None:
    text = exact_json.dumps({"amount": Decimal("120.10"), "big": Decimal("12345678901234567.89"), "n": 3,
                             "s": "x", "nested": [Decimal("0.001")]})
    assert text == '{"amount": 120.10, "big": 12345678901234567.89, "n": 3, "s": "x", "nested": [0.001]}'
    back = exact_json.loads(text)
    assert back["big"] == Decimal("12345678901234567.89") and isinstance(back["amount"], Decimal)


def test_a_string_that_looks_like_the_placeholder_is_left_alone() -> None:
    assert exact_json.loads(exact_json.dumps({"a": "\x00decimal-0\x00", "b": Decimal("1.5")})) == {
        "a": "\x00decimal-0\x00", "b": Decimal("1.5")}


def test_non_finite_is_refused() -> None:
    with pytest.raises(ValueError):
        exact_json.dumps({"x": Decimal("NaN")})


@given(st.decimals(allow_nan=False, allow_infinity=False, places=3, min_value=-10**12, max_value=10**12))
def test_round_trip(value: Decimal) -> None:
    assert exact_json.loads(exact_json.dumps({"v": value}))["v"] == value
