"""Pure transitions: examples for each rule, and random operation sequences (hypothesis)."""

from datetime import UTC, datetime

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from kollrefund import domain as d
from kollrefund.errors import DomainError
from kollrefund.money import Money

AT = datetime(2026, 11, 25, 20, 41, 7, 123456, tzinfo=UTC)


def usd(minor: int) -> Money:
    return Money(minor, "usd")


def paid_payment(amount: int = 12000) -> d.Payment:
    p = d.new_payment(id="PAY-1", invoice_id="INV-9", amount=usd(amount), psp_reference="pi_1", at=AT)
    return d.capture(p, at=AT)


def test_seed_story_refund_restores_full_balance() -> None:
    inv = d.new_invoice("INV-9", "Acme", usd(12000))
    p = paid_payment()
    inv = d.settle_invoice(inv, [p])
    assert (inv.balance, inv.status, p.status) == (usd(0), d.InvoiceStatus.PAID, d.PaymentStatus.PAID)
    refund_at = datetime(2026, 11, 26, 9, 0, 1, tzinfo=UTC)
    p = d.refund(p, usd(12000), at=refund_at)
    inv = d.settle_invoice(inv, [p])
    assert p.status is d.PaymentStatus.REFUNDED
    assert p.updated_at == "2026-11-26T09:00:01Z"  # the refund's own time, to the second
    assert (inv.balance, inv.status) == (usd(12000), d.InvoiceStatus.UNPAID)


def test_partial_refund_and_partial_status() -> None:
    p = d.refund(paid_payment(), usd(2000), at=AT)
    assert p.status is d.PaymentStatus.PARTIALLY_REFUNDED
    inv = d.settle_invoice(d.new_invoice("INV-9", "Acme", usd(12000)), [p])
    assert inv.balance == usd(2000) and inv.status is d.InvoiceStatus.PARTIALLY_PAID


def test_over_refund_and_wrong_state_are_refused() -> None:
    p = paid_payment()
    with pytest.raises(DomainError, match="still refundable"):
        d.refund(p, usd(12001), at=AT)
    p = d.refund(p, usd(12000), at=AT)
    with pytest.raises(DomainError, match="only a paid payment"):
        d.refund(p, usd(1), at=AT)
    auth = d.authorize(
        d.new_payment(id="PAY-2", invoice_id="INV-9", amount=usd(500), psp_reference=None, at=AT),
        psp_reference="pi_2",
        at=AT,
    )
    with pytest.raises(DomainError, match="Capture it first"):
        d.refund(auth, usd(100), at=AT)
    with pytest.raises(DomainError):
        d.refund(paid_payment(), Money(100, "eur"), at=AT)
    with pytest.raises(DomainError):
        d.refund(paid_payment(), usd(0), at=AT)


def test_capture_rules() -> None:
    p = d.new_payment(id="PAY-2", invoice_id="INV-9", amount=usd(5000), psp_reference=None, at=AT)
    p = d.authorize(p, psp_reference="pi_2", at=AT)
    with pytest.raises(DomainError, match="more than"):
        d.capture(p, usd(5001), at=AT)
    c = d.capture(p, usd(3000), at=AT)
    assert c.captured == usd(3000) and c.status is d.PaymentStatus.PAID and c.refundable == usd(3000)
    with pytest.raises(DomainError, match="only an authorized"):
        d.capture(c, at=AT)
    with pytest.raises(DomainError, match="only an authorized"):
        d.void(c, at=AT)
    assert d.void(p, at=AT).status is d.PaymentStatus.CANCELED


def test_payment_must_fit_invoice() -> None:
    inv = d.new_invoice("INV-9", "Acme", usd(12000))
    with pytest.raises(DomainError, match="still open"):
        d.check_applicable(inv, [], usd(12001))
    with pytest.raises(DomainError, match="EUR"):
        d.check_applicable(inv, [], Money(100, "eur"))
    held = d.authorize(
        d.new_payment(id="PAY-2", invoice_id="INV-9", amount=usd(10000), psp_reference=None, at=AT),
        psp_reference="pi",
        at=AT,
    )
    with pytest.raises(DomainError, match="still open"):
        d.check_applicable(inv, [held], usd(2001))
    d.check_applicable(inv, [held], usd(2000))


def test_reason_must_be_stripes() -> None:
    with pytest.raises(DomainError, match="reason"):
        d.new_refund(id="RF-1", payment=paid_payment(), amount=usd(1), reason="because", at=AT)
    r = d.new_refund(id="RF-1", payment=paid_payment(), amount=usd(1), reason="duplicate", at=AT)
    assert r.status is d.RefundStatus.PENDING and r.reason == "duplicate"


class InvoiceMachine(RuleBasedStateMachine):
    """Random sequences of collect/authorize/capture/void/refund/reverse on one invoice."""

    def __init__(self) -> None:
        super().__init__()
        self.invoice = d.new_invoice("INV-9", "Acme", usd(10000))
        self.payments: dict[str, d.Payment] = {}
        self.refunded_amounts: dict[str, list[int]] = {}
        self.n = 0

    def _settle(self) -> None:
        self.invoice = d.settle_invoice(self.invoice, self.payments.values())

    @rule(amount=st.integers(1, 12000), manual=st.booleans())
    def collect(self, amount: int, manual: bool) -> None:
        self.n += 1
        pid = f"PAY-{self.n}"
        try:
            d.check_applicable(self.invoice, self.payments.values(), usd(amount))
        except DomainError:
            assert amount > d.open_amount(self.invoice, self.payments.values()).minor
            return
        p = d.new_payment(id=pid, invoice_id="INV-9", amount=usd(amount), psp_reference=None, at=AT)
        p = d.authorize(p, psp_reference=f"pi_{pid}", at=AT) if manual else d.capture(p, at=AT)
        self.payments[pid] = p
        self._settle()

    @precondition(lambda self: self.payments)
    @rule(data=st.data())
    def capture(self, data: st.DataObject) -> None:
        pid = data.draw(st.sampled_from(sorted(self.payments)))
        p = self.payments[pid]
        amount = data.draw(st.integers(1, max(1, p.amount.minor + 5)))
        try:
            self.payments[pid] = d.capture(p, usd(amount), at=AT)
        except DomainError:
            assert p.status is not d.PaymentStatus.AUTHORIZED or amount > p.capturable.minor
        self._settle()

    @precondition(lambda self: self.payments)
    @rule(data=st.data())
    def void(self, data: st.DataObject) -> None:
        pid = data.draw(st.sampled_from(sorted(self.payments)))
        try:
            self.payments[pid] = d.void(self.payments[pid], at=AT)
        except DomainError:
            assert self.payments[pid].status is not d.PaymentStatus.AUTHORIZED
        self._settle()

    @precondition(lambda self: self.payments)
    @rule(data=st.data())
    def refund(self, data: st.DataObject) -> None:
        pid = data.draw(st.sampled_from(sorted(self.payments)))
        p = self.payments[pid]
        amount = data.draw(st.integers(1, max(1, p.captured.minor + 5)))
        try:
            self.payments[pid] = d.refund(p, usd(amount), at=AT)
            self.refunded_amounts.setdefault(pid, []).append(amount)
        except DomainError:
            assert amount > p.refundable.minor or p.status not in (
                d.PaymentStatus.PAID,
                d.PaymentStatus.PARTIALLY_REFUNDED,
            )
        self._settle()

    @precondition(lambda self: any(self.refunded_amounts.values()))
    @rule(data=st.data())
    def refund_fails_later(self, data: st.DataObject) -> None:
        pid = data.draw(st.sampled_from(sorted(k for k, v in self.refunded_amounts.items() if v)))
        amount = self.refunded_amounts[pid][-1]
        candidate = {**self.payments, pid: d.reverse_refund(self.payments[pid], usd(amount), at=AT)}
        try:
            self.invoice = d.settle_invoice(self.invoice, candidate.values())
        except DomainError:
            # the invoice was paid again after this refund: reversing it would overpay the
            # invoice, which the domain refuses (reconcile reports it for a person to decide)
            assert d.invoice_balance(self.invoice.total, candidate.values()).minor < 0
            return
        self.refunded_amounts[pid].pop()
        self.payments = candidate

    @invariant()
    def money_invariants(self) -> None:
        inv = self.invoice
        assert 0 <= inv.balance.minor <= inv.total.minor
        assert inv.status is d.invoice_status(inv.total, inv.balance)
        expected = inv.total.minor - sum(p.captured.minor - p.refunded.minor for p in self.payments.values())
        assert inv.balance.minor == expected
        for pid, p in self.payments.items():
            assert 0 <= p.refunded.minor <= p.captured.minor <= p.amount.minor
            assert p.refunded.minor == sum(self.refunded_amounts.get(pid, []))
            if p.status in (d.PaymentStatus.PAID, d.PaymentStatus.PARTIALLY_REFUNDED, d.PaymentStatus.REFUNDED):
                assert p.captured.minor > 0
                want = (
                    d.PaymentStatus.PAID
                    if p.refunded.minor == 0
                    else d.PaymentStatus.REFUNDED
                    if p.refunded == p.captured
                    else d.PaymentStatus.PARTIALLY_REFUNDED
                )
                assert p.status is want


InvoiceMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)
TestInvoiceMachine = InvoiceMachine.TestCase
