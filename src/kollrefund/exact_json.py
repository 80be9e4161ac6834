"""JSON with exact decimal numbers: money crosses HTTP as a JSON number, never via float.

``json`` writes Decimals only through ``default``, which must return a JSON-able value,
so each Decimal goes out as a unique placeholder string that is then replaced by the
Decimal's own text. ``loads`` reads every number with a fraction as a Decimal.
"""

from __future__ import annotations

import json
import secrets
from decimal import Decimal
from typing import Any


def dumps(obj: Any, **options: Any) -> str:
    numbers: dict[str, str] = {}
    salt = secrets.token_hex(8)  # no string in the data can be mistaken for a placeholder

    def default(o: object) -> Any:
        if isinstance(o, Decimal):
            if not o.is_finite():
                raise ValueError(f"{o} is not a JSON number")
            key = f"\x00decimal-{salt}-{len(numbers)}\x00"
            numbers[json.dumps(key)] = format(o, "f")
            return key
        raise TypeError(f"cannot write {type(o).__name__} as JSON")

    text = json.dumps(obj, default=default, **options)
    for quoted, number in numbers.items():
        text = text.replace(quoted, number, 1)
    return text


def loads(data: str | bytes) -> Any:
    return json.loads(data, parse_float=Decimal)
