"""Invoices, payments and refunds as immutable values, and the pure moves between states.

Nothing here does I/O or reads a clock: every transition takes what it needs
(amounts, the time Stripe reported) and returns new values or raises
``DomainError``. The store persists what these functions return; the actions
decide when to call them. SPEC's rules live here and only here:

- invoice balance = total - sum(captured) + sum(refunded by succeeded or pending refunds);
- invoice status follows the balance: ``unpaid`` at the total, ``paid`` at zero,
  ``partially_paid`` between;
- refunded <= captured <= authorized amount, for every payment.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum

from kollrefund.errors import DomainError
from kollrefund.money import Money


class InvoiceStatus(StrEnum):
    UNPAID = "unpaid"
    PARTIALLY_PAID = "partially_paid"
    PAID = "paid"


class PaymentStatus(StrEnum):
    PENDING = "pending"
    AUTHORIZED = "authorized"
    PAID = "paid"
    PARTIALLY_REFUNDED = "partially_refunded"
    REFUNDED = "refunded"
    CANCELED = "canceled"
    FAILED = "failed"


class RefundStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def counts(self) -> bool:
        """Whether this refund takes money back from the payment (SPEC: succeeded or pending)."""
        return self in (RefundStatus.PENDING, RefundStatus.SUCCEEDED)


REFUND_REASONS = ("duplicate", "fraudulent", "requested_by_customer")


def iso(at: datetime) -> str:
    """UTC ISO 8601 to the second, the only time format the program shows."""
    return at.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def from_iso(text: str) -> datetime:
    """The inverse of :func:`iso`."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Invoice:
    id: str
    customer: str
    total: Money
    balance: Money
    status: InvoiceStatus
    netsuite_id: str | None = None
    customer_netsuite_id: str | None = None
    stripe_customer: str | None = None
    issued_on: str | None = None
    due_on: str | None = None

    @property
    def currency(self) -> str:
        return self.total.currency


@dataclass(frozen=True, slots=True)
class Payment:
    id: str
    invoice_id: str
    amount: Money  # what was authorized (or charged): the ceiling for capture
    captured: Money
    refunded: Money  # succeeded + pending refunds
    status: PaymentStatus
    psp_reference: str | None
    updated_at: str
    psp: str = "stripe"
    netsuite_id: str | None = None

    @property
    def currency(self) -> str:
        return self.amount.currency

    @property
    def refundable(self) -> Money:
        return self.captured - self.refunded

    @property
    def capturable(self) -> Money:
        if self.status is not PaymentStatus.AUTHORIZED:
            return Money.zero(self.currency)
        return self.amount - self.captured


@dataclass(frozen=True, slots=True)
class Refund:
    id: str
    payment_id: str
    amount: Money
    status: RefundStatus
    reason: str | None
    psp_reference: str | None
    created_at: str
    failure_reason: str | None = None
    netsuite_id: str | None = None


# -- invoices ---------------------------------------------------------------------


def invoice_status(total: Money, balance: Money) -> InvoiceStatus:
    if balance.minor == total.minor:
        return InvoiceStatus.UNPAID
    if balance.minor == 0:
        return InvoiceStatus.PAID
    return InvoiceStatus.PARTIALLY_PAID


def invoice_balance(total: Money, payments: Iterable[Payment]) -> Money:
    """SPEC: total - sum(captured) + sum(refunded), over the payments applied to the invoice."""
    balance = total
    for p in payments:
        balance = balance - p.captured + p.refunded
    return balance


def settle_invoice(invoice: Invoice, payments: Iterable[Payment]) -> Invoice:
    """The invoice with its balance and status derived from its payments."""
    payments = list(payments)
    for p in payments:
        if p.invoice_id != invoice.id:
            raise ValueError(f"{p.id} is not applied to {invoice.id}")
    balance = invoice_balance(invoice.total, payments)
    if balance.minor < 0 or balance > invoice.total:
        raise DomainError(
            f"Invoice {invoice.id} would have balance {balance.display()} outside 0..{invoice.total.display()}."
        )
    return replace(invoice, balance=balance, status=invoice_status(invoice.total, balance))


def new_invoice(
    id: str,
    customer: str,
    total: Money,
    **optional: str | None,
) -> Invoice:
    if total.minor <= 0:
        raise DomainError(f"Invoice {id} total must be more than zero; got {total.format()}.")
    return Invoice(id=id, customer=customer, total=total, balance=total, status=InvoiceStatus.UNPAID, **optional)


def open_amount(invoice: Invoice, payments: Iterable[Payment]) -> Money:
    """What may still be charged on the invoice: its balance less authorizations not yet captured."""
    held = Money.zero(invoice.currency)
    for p in payments:
        if p.status in (PaymentStatus.PENDING, PaymentStatus.AUTHORIZED):
            held = held + (p.amount - p.captured)
    return invoice.balance - held


def check_applicable(invoice: Invoice, payments: Iterable[Payment], amount: Money) -> None:
    """Refuse a new payment that the invoice cannot take (currency, amount, what is still open)."""
    if amount.currency != invoice.currency:
        raise DomainError(
            f"The payment is in {amount.currency.upper()} but invoice {invoice.id} is in {invoice.currency.upper()}."
        )
    if amount.minor <= 0:
        raise DomainError(f"A payment on {invoice.id} must be more than zero.")
    available = open_amount(invoice, payments)
    if amount > available:
        raise DomainError(
            f"{amount.display()} is more than the {available.display()} still open on invoice {invoice.id}."
        )


# -- payments ---------------------------------------------------------------------


def _payment_status_after_refunds(p: Payment) -> PaymentStatus:
    if p.refunded.minor == 0:
        return PaymentStatus.PAID
    if p.refunded == p.captured:
        return PaymentStatus.REFUNDED
    return PaymentStatus.PARTIALLY_REFUNDED


def new_payment(
    *,
    id: str,
    invoice_id: str,
    amount: Money,
    psp_reference: str | None,
    at: datetime,
    psp: str = "stripe",
) -> Payment:
    """A payment about to be attempted: pending, nothing captured."""
    if amount.minor <= 0:
        raise DomainError(f"Payment {id} amount must be more than zero.")
    zero = Money.zero(amount.currency)
    return Payment(
        id=id,
        invoice_id=invoice_id,
        amount=amount,
        captured=zero,
        refunded=zero,
        status=PaymentStatus.PENDING,
        psp_reference=psp_reference,
        updated_at=iso(at),
        psp=psp,
    )


def authorize(p: Payment, *, psp_reference: str, at: datetime) -> Payment:
    if p.status is not PaymentStatus.PENDING:
        raise DomainError(f"Payment {p.id} is {p.status}; only a pending payment can be authorized.")
    return replace(p, status=PaymentStatus.AUTHORIZED, psp_reference=psp_reference, updated_at=iso(at))


def fail(p: Payment, *, at: datetime) -> Payment:
    if p.status is not PaymentStatus.PENDING:
        raise DomainError(f"Payment {p.id} is {p.status}; only a pending payment can fail.")
    return replace(p, status=PaymentStatus.FAILED, updated_at=iso(at))


def capture(p: Payment, amount: Money | None = None, *, at: datetime, psp_reference: str | None = None) -> Payment:
    """Capture an authorization (or record a charge that captured at once, from pending).

    Without ``amount``, all of it. A partial capture releases the rest: Stripe
    allows one capture per authorization.
    """
    if p.status not in (PaymentStatus.AUTHORIZED, PaymentStatus.PENDING):
        raise DomainError(f"Payment {p.id} is {p.status}; only an authorized payment can be captured.")
    amount = amount if amount is not None else p.amount - p.captured
    if amount.currency != p.currency:
        raise DomainError(f"Payment {p.id} is in {p.currency.upper()}, not {amount.currency.upper()}.")
    if amount.minor <= 0:
        raise DomainError(f"The capture amount for {p.id} must be more than zero.")
    if amount > p.amount - p.captured:
        raise DomainError(
            f"{amount.display()} is more than the {(p.amount - p.captured).display()} authorized on {p.id}."
        )
    return replace(
        p,
        captured=p.captured + amount,
        status=PaymentStatus.PAID,
        updated_at=iso(at),
        psp_reference=psp_reference or p.psp_reference,
    )


def void(p: Payment, *, at: datetime) -> Payment:
    if p.status is not PaymentStatus.AUTHORIZED:
        raise DomainError(f"Payment {p.id} is {p.status}; only an authorized payment can be voided.")
    return replace(p, status=PaymentStatus.CANCELED, updated_at=iso(at))


def check_refundable(p: Payment, amount: Money) -> None:
    if p.status not in (PaymentStatus.PAID, PaymentStatus.PARTIALLY_REFUNDED):
        hint = " Capture it first, or void it." if p.status is PaymentStatus.AUTHORIZED else ""
        raise DomainError(f"Payment {p.id} is {p.status}; only a paid payment can be refunded.{hint}")
    if amount.currency != p.currency:
        raise DomainError(f"Payment {p.id} is in {p.currency.upper()}, not {amount.currency.upper()}.")
    if amount.minor <= 0:
        raise DomainError(f"The refund amount for {p.id} must be more than zero.")
    if amount > p.refundable:
        raise DomainError(f"{amount.display()} is more than the {p.refundable.display()} still refundable on {p.id}.")


def refund(p: Payment, amount: Money, *, at: datetime) -> Payment:
    """Take ``amount`` back: the payment after a refund that succeeded or is pending.

    ``at`` is the refund's own Stripe ``created`` time, so the operator's view and
    Stripe's agree to the second (SPEC).
    """
    check_refundable(p, amount)
    after = replace(p, refunded=p.refunded + amount, updated_at=iso(at))
    return replace(after, status=_payment_status_after_refunds(after))


def reverse_refund(p: Payment, amount: Money, *, at: datetime) -> Payment:
    """A refund that failed or was canceled gives ``amount`` back to the payment."""
    if amount > p.refunded or amount.minor <= 0:
        raise DomainError(
            f"Payment {p.id} has only {p.refunded.display()} refunded; cannot reverse {amount.display()}."
        )
    after = replace(p, refunded=p.refunded - amount, updated_at=iso(at))
    return replace(after, status=_payment_status_after_refunds(after))


def new_refund(*, id: str, payment: Payment, amount: Money, reason: str | None, at: datetime) -> Refund:
    """A refund intent, checked against the payment, before Stripe hears of it."""
    check_refundable(payment, amount)
    if reason is not None and reason not in REFUND_REASONS:
        raise DomainError(f"Unknown refund reason {reason!r}; use one of {', '.join(REFUND_REASONS)}.")
    return Refund(
        id=id,
        payment_id=payment.id,
        amount=amount,
        status=RefundStatus.PENDING,
        reason=reason,
        psp_reference=None,
        created_at=iso(at),
    )
