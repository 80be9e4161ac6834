"""Checking imported payments against Stripe: the file's claims, Stripe's truth.

With a Stripe key configured, ``import`` reads every ``psp_reference`` from
Stripe. A reference Stripe does not know, or one whose amount or currency
disagrees with the file, makes the whole file fail; otherwise status, captured
and refunded amounts (and the refunds themselves) are taken from Stripe.
"""

from __future__ import annotations

from collections.abc import Sequence

from kollrefund.actions import PaymentVerifier, VerifiedPayment, VerifiedRefund
from kollrefund.domain import PaymentStatus
from kollrefund.errors import ProviderRejected
from kollrefund.importer import PaymentRow, RowErrors
from kollrefund.stripe_gateway import StripeGateway, StripePayment
from kollrefund.stripe_truth import refund_status

_STATUS = {
    "requires_capture": PaymentStatus.AUTHORIZED,
    "canceled": PaymentStatus.CANCELED,
    "requires_payment_method": PaymentStatus.FAILED,
}


def _status(sp: StripePayment) -> PaymentStatus:
    if sp.status == "succeeded":
        if sp.refunded.minor == 0:
            return PaymentStatus.PAID
        return PaymentStatus.REFUNDED if sp.refunded == sp.captured else PaymentStatus.PARTIALLY_REFUNDED
    return _STATUS.get(sp.status, PaymentStatus.PENDING)


def verifier(gw: StripeGateway) -> PaymentVerifier:
    def verify(rows: Sequence[PaymentRow], errors: RowErrors) -> dict[str, VerifiedPayment]:
        facts: dict[str, VerifiedPayment] = {}
        for row in rows:
            if row.psp != "stripe":
                errors.add(row.where, f"psp {row.psp!r} cannot be checked; only stripe payments are supported")
                continue
            try:
                sp = gw.find_payment(row.psp_reference)
            except ProviderRejected as exc:  # Stripe refused this reference (not a bad key, not an outage)
                errors.add(row.where, f"Stripe refused {row.psp_reference}: {exc.message}")
                continue
            # an unreachable Stripe (exit 6) or a refused key (exit 3) stops the import whole:
            # that is no fault of the file, and nothing has been written yet
            if sp is None:
                errors.add(row.where, f"psp_reference {row.psp_reference} does not exist in Stripe")
                continue
            if sp.amount != row.amount:
                errors.add(row.where, f"Stripe has {row.psp_reference} for {sp.amount.display()}, "
                                      f"the file says {row.amount.display()}")
                continue
            facts[row.id] = VerifiedPayment(
                status=_status(sp), amount=sp.amount, captured=sp.captured, refunded=sp.refunded,
                updated_at=max([sp.created_at, *(r.created_at for r in sp.refunds if r.counts)]),
                capture_before=sp.capture_before,
                refunds=tuple(
                    VerifiedRefund(psp_reference=r.id, amount=r.amount, status=refund_status(r.status).value,
                                   reason=r.reason, created_at=r.created_at, failure_reason=r.failure_reason)
                    for r in sorted(sp.refunds, key=lambda r: (r.created_at, r.id))
                ),
            )
        return facts

    return verify
