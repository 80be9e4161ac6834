"""Bringing the cache in line with what Stripe says about one payment.

Used by the stale-cache guard before every capture or refund, by ``resume``
and by ``reconcile``. Each Stripe refund is matched to a local one by
``metadata.kollrefund_refund_id`` first, then by its Stripe id, so however
often this runs, one Stripe refund is one local refund.
"""

from __future__ import annotations

from dataclasses import replace

from kollrefund import domain as d
from kollrefund.domain import Payment, PaymentStatus, RefundStatus, from_iso
from kollrefund.store import AuditEntry, Store
from kollrefund.stripe_gateway import StripePayment, StripeRefund


def refund_status(stripe_status: str) -> RefundStatus:
    # Stripe's requires_action is a refund still on its way: it counts, like pending.
    return {
        "succeeded": RefundStatus.SUCCEEDED,
        "failed": RefundStatus.FAILED,
        "canceled": RefundStatus.CANCELED,
    }.get(stripe_status, RefundStatus.PENDING)


def differs(p: Payment, sp: StripePayment) -> bool:
    return (p.captured, p.refunded) != (sp.captured, sp.refunded) or status_differs(p, sp)


def status_differs(p: Payment, sp: StripePayment) -> bool:
    if sp.status == "canceled":
        return p.status is not PaymentStatus.CANCELED
    if sp.status == "requires_capture":
        return p.status is not PaymentStatus.AUTHORIZED
    return False


def absorb(store: Store, *, operator: str, payment: Payment, sp: StripePayment, why: str) -> list[str]:
    """Record Stripe's truth for ``payment`` (inside the caller's transaction); say what changed."""
    changes: list[str] = []
    p = payment
    invoice = store.get_invoice(p.invoice_id)
    balance_before = invoice.balance
    if p.status is PaymentStatus.AUTHORIZED and sp.status == "succeeded":
        p = d.capture(p, sp.captured, at=from_iso(sp.created_at))
        changes.append(f"{p.id} was captured in Stripe: {sp.captured.display()}")
        store.enqueue("payment", p.id)
    elif p.status is PaymentStatus.AUTHORIZED and sp.status == "canceled":
        p = d.void(p, at=from_iso(sp.created_at))
        changes.append(f"{p.id} was canceled in Stripe")
    known = {r.psp_reference: r for r in store.refunds_for_payment(p.id) if r.psp_reference}
    by_local = {r.id: r for r in store.refunds_for_payment(p.id)}
    for sr in sorted(sp.refunds, key=lambda r: (r.created_at, r.id)):
        local = (by_local.get(sr.local_id) if sr.local_id else None) or known.get(sr.id)
        if local is None:
            p = _record_outside_refund(store, operator=operator, p=p, sr=sr, changes=changes)
            continue
        new_status = refund_status(sr.status)
        if local.status is new_status and local.psp_reference == sr.id:
            continue
        if local.status.counts and not new_status.counts:
            p = d.reverse_refund(p, local.amount, at=from_iso(sr.created_at))
            changes.append(f"{local.id} ({sr.id}) {new_status.value} in Stripe; {local.amount.display()} is owed again")
        elif not local.status.counts and new_status.counts:
            p = d.refund(p, local.amount, at=from_iso(sr.created_at))
            changes.append(f"{local.id} ({sr.id}) is {new_status.value} in Stripe")
        else:
            changes.append(f"{local.id} ({sr.id}) is {new_status.value} in Stripe")
        store.save_refund(
            replace(local, status=new_status, psp_reference=sr.id, failure_reason=sr.failure_reason,
                    created_at=sr.created_at)
        )
    if p != payment:
        store.save_payment(p)
        after = d.settle_invoice(invoice, [p if q.id == p.id else q for q in store.payments_for_invoice(invoice.id)])
        store.save_invoice(after)
        store.audit(AuditEntry(
            action="stripe.absorb", operator=operator, subject_id=p.id, invoice_id=invoice.id, payment_id=p.id,
            balance_before=balance_before, balance_after=after.balance, stripe_ref=sp.id,
            detail={"why": why, "changes": changes},
        ))
    return changes


def _record_outside_refund(
    store: Store, *, operator: str, p: Payment, sr: StripeRefund, changes: list[str]
) -> Payment:
    """A refund made outside kollrefund (Dashboard, another tool) gets its own RF id."""
    status = refund_status(sr.status)
    refund_id = store.next_id("RF")
    store.insert_refund(d.Refund(
        id=refund_id, payment_id=p.id, amount=sr.amount, status=status, reason=sr.reason,
        psp_reference=sr.id, created_at=sr.created_at, failure_reason=sr.failure_reason,
    ))
    if status.counts:
        p = d.refund(p, sr.amount, at=from_iso(sr.created_at))
        store.enqueue("refund", refund_id, depends_on=store.last_outbox_id(p.id))
    changes.append(f"{sr.id} ({sr.amount.display()}, {sr.status}) was made outside kollrefund; recorded as {refund_id}")
    store.audit(AuditEntry(
        action="refund.recorded_from_stripe", operator=operator, subject_id=refund_id, invoice_id=p.invoice_id,
        payment_id=p.id,
        refund_id=refund_id, amount=sr.amount, reason=sr.reason, stripe_ref=sr.id,
    ))
    return p
