"""Exact money: integer minor units and a currency, as Stripe counts them.

"Never use floating point in an accounting system" (beancount). Amounts live as
``int`` minor units inside the program; they cross the edges (CSV, JSON,
NetSuite, the screen) as decimal strings in major units, parsed with ``Decimal``
and refused -- never rounded -- when they carry more precision than the currency has.

The exponents are Stripe's, not ISO 4217's (https://docs.stripe.com/currencies):
- zero-decimal: BIF CLP DJF GNF JPY KMF KRW MGA PYG RWF UGX VND VUV XAF XOF XPF;
- three-decimal: BHD JOD KWD OMR TND, and Stripe requires the last minor digit
  of a charge or refund to be 0 ("5.124 KWD must be rounded to 5.120 or 5.130");
- special cases: ISK stays two-decimal in the API but charges and refunds must be
  whole krona (amount divisible by 100, error
  ``invalid_charge_amount_no_decimal_compatible``); HUF and TWD are two-decimal
  for charges (zero-decimal only for payouts, which this tool does not make).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from kollrefund.errors import UsageError

ZERO_DECIMAL = frozenset(
    "bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf".split()
)
THREE_DECIMAL = frozenset("bhd jod kwd omr tnd".split())
# Stripe's presentment currencies (https://docs.stripe.com/currencies).
SUPPORTED = frozenset(
    """usd aed afn all amd ang aoa ars aud awg azn bam bbd bdt bgn bhd bif bmd bnd bob brl
    bsd bwp byn bzd cad cdf chf clp cny cop crc cve czk djf dkk dop dzd egp etb eur fjd fkp
    gbp gel gip gmd gnf gtq gyd hkd hnl htg huf idr ils inr isk jmd jod jpy kes kgs khr kmf
    krw kwd kyd kzt lak lbp lkr lrd lsl mad mdl mga mkd mmk mnt mop mur mvr mwk mxn myr mzn
    nad ngn nio nok npr nzd omr pab pen pgk php pkr pln pyg qar ron rsd rub rwf sar sbd scr
    sek sgd shp sle sos srd std szl thb tjs tnd top try ttd twd tzs uah ugx uyu uzs vnd vuv
    wst xaf xcd xof xpf yer zar zmw""".split()
)
_PLAIN_DECIMAL = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)\Z")
# The step a Stripe charge or refund amount must be a multiple of, in minor units.
_STRIPE_STEP = {**dict.fromkeys(THREE_DECIMAL, 10), "isk": 100}


def normalize_currency(code: str) -> str:
    """Lowercase a currency code and refuse one Stripe does not support."""
    cur = code.strip().lower()
    if cur not in SUPPORTED:
        raise UsageError(f"Unknown currency {code.strip()!r}; use a three-letter code Stripe supports, such as usd.")
    return cur


def exponent(currency: str) -> int:
    """How many decimal places ``currency`` has in Stripe's API."""
    cur = currency.lower()
    if cur in ZERO_DECIMAL:
        return 0
    if cur in THREE_DECIMAL:
        return 3
    return 2


@dataclass(frozen=True, slots=True, order=False)
class Money:
    """An exact amount: ``minor`` units of ``currency`` (lowercase ISO code)."""

    minor: int
    currency: str

    def __post_init__(self) -> None:
        if type(self.minor) is not int:  # bool and float are refused on purpose
            raise TypeError(f"Money.minor must be int, not {type(self.minor).__name__}")

    @classmethod
    def zero(cls, currency: str) -> Money:
        return cls(0, currency)

    @classmethod
    def parse(cls, text: str | int | Decimal, currency: str) -> Money:
        """Parse a decimal amount in major units; refuse anything inexact.

        ``parse("12.34", "usd") == Money(1234, "usd")``; ``"10.001"`` USD and
        ``"12.5"`` JPY are refused rather than rounded.
        """
        cur = normalize_currency(currency)
        raw = str(text).strip()
        # Plain decimal notation only: "1e3" or "1_000" are valid Decimals but no operator
        # means them as an amount, and a typo must not become a thousand dollars.
        if not _PLAIN_DECIMAL.match(raw):
            raise UsageError(f"{raw!r} is not an amount; write it like 12.34.")
        try:
            value = Decimal(raw)
        except InvalidOperation:
            raise UsageError(f"{raw!r} is not an amount; write it like 12.34.") from None
        exp = exponent(cur)
        scaled = value.scaleb(exp)
        if scaled != scaled.to_integral_value():
            places = "no decimals" if exp == 0 else f"at most {exp} decimals"
            raise UsageError(f"{raw} has too many decimals for {cur.upper()}, which takes {places}.")
        return cls(int(scaled), cur)

    def to_decimal(self) -> Decimal:
        return Decimal(self.minor).scaleb(-exponent(self.currency))

    def format(self) -> str:
        """The major-unit decimal string used at every edge: ``"120.00"``, ``"1500"``."""
        exp = exponent(self.currency)
        sign = "-" if self.minor < 0 else ""
        whole, frac = divmod(abs(self.minor), 10**exp)
        return f"{sign}{whole}.{frac:0{exp}d}" if exp else f"{sign}{whole}"

    def display(self) -> str:
        return f"{self.format()} {self.currency.upper()}"

    def __str__(self) -> str:
        return self.display()

    # arithmetic: only between the same currency
    def _same(self, other: Money) -> None:
        if not isinstance(other, Money):
            raise TypeError("Money only combines with Money")
        if other.currency != self.currency:
            raise ValueError(f"cannot combine {self.currency} with {other.currency}")

    def __add__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.minor + other.minor, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.minor - other.minor, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.minor, self.currency)

    def __lt__(self, other: Money) -> bool:
        self._same(other)
        return self.minor < other.minor

    def __le__(self, other: Money) -> bool:
        self._same(other)
        return self.minor <= other.minor

    def __gt__(self, other: Money) -> bool:
        self._same(other)
        return self.minor > other.minor

    def __ge__(self, other: Money) -> bool:
        self._same(other)
        return self.minor >= other.minor

    def is_positive(self) -> bool:
        return self.minor > 0


def check_stripe_amount(amount: Money) -> None:
    """Refuse an amount Stripe would refuse for a charge or a refund in its currency."""
    step = _STRIPE_STEP.get(amount.currency, 1)
    if amount.minor % step:
        unit = Money(step, amount.currency).format()
        raise UsageError(
            f"Stripe takes {amount.currency.upper()} amounts in steps of {unit}; "
            f"{amount.format()} is not one."
        )


def parse_positive(text: str, currency: str, *, what: str = "amount") -> Money:
    """Parse an operator-typed amount that must be above zero (``--amount``)."""
    money = Money.parse(text, currency)
    if money.minor <= 0:
        raise UsageError(f"The {what} must be more than zero; got {text.strip()}.")
    return money
