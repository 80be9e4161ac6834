"""Use cases on the cache: import, list, status. They never print; they return views.

Money movements live in ``movements.py``, NetSuite in ``sync.py``; all share the
:class:`Context` below.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kollrefund.domain import (
    Invoice,
    InvoiceStatus,
    Payment,
    PaymentStatus,
    Refund,
    RefundStatus,
    capture,
    check_applicable,
    iso,
    new_payment,
    settle_invoice,
)
from kollrefund.errors import KollrefundError, NotFound, UsageError
from kollrefund.money import Money
from kollrefund.store import AuditEntry, Store, now
from kollrefund.views import ImportResult, InvoiceView, PaymentView, RefundView

if TYPE_CHECKING:  # the importer (csv, json, re, decimal) loads only for `import`: read-only commands start faster
    from kollrefund.importer import InvoiceRow, PaymentRow, RowErrors


@dataclass
class Context:
    """What every action needs: where the cache is and who is acting."""

    cache_path: Path
    operator: str
    settings: Any = None  # kollrefund.settings.Settings; Any keeps this module import-light

    def open_store(self, *, readonly: bool = False) -> Store:
        return Store.open(self.cache_path, readonly=readonly)


# -- reading ------------------------------------------------------------------------


def payment_view(store: Store, payment: Payment) -> PaymentView:
    refunds = [RefundView(r, store.refund_sync(r.id)) for r in store.refunds_for_payment(payment.id)]
    return PaymentView(payment, store.payment_sync(payment.id), refunds)


def invoice_view(store: Store, invoice: Invoice) -> InvoiceView:
    payments = [payment_view(store, p) for p in store.payments_for_invoice(invoice.id)]
    return InvoiceView(invoice, store.invoice_sync(invoice), payments)


def status(ctx: Context, record_id: str) -> InvoiceView | PaymentView:
    """The payment breakdown of an invoice, or one payment with its refunds."""
    with ctx.open_store(readonly=True) as store:
        inv = store.find_invoice(record_id)
        if inv is not None:
            return invoice_view(store, inv)
        try:
            return payment_view(store, store.get_payment(record_id))
        except NotFound:
            raise NotFound(
                f"No invoice or payment {record_id} in the cache.",
                hint="List them with `kollrefund invoices` or `kollrefund payments`.",
            ) from None


def list_invoices(ctx: Context, *, status: str | None = None) -> list[Invoice]:
    if status is not None and status not in {s.value for s in InvoiceStatus}:
        raise UsageError(f"Unknown invoice status {status!r}; use one of {', '.join(s.value for s in InvoiceStatus)}.")
    with ctx.open_store(readonly=True) as store:
        return store.list_invoices(status=status)


def list_payments(ctx: Context, *, status: str | None = None) -> list[PaymentView]:
    if status is not None and status not in {s.value for s in PaymentStatus}:
        raise UsageError(f"Unknown payment status {status!r}; use one of {', '.join(s.value for s in PaymentStatus)}.")
    with ctx.open_store(readonly=True) as store:
        return [PaymentView(p, store.payment_sync(p.id)) for p in store.list_payments(status=status)]


# -- import -------------------------------------------------------------------------

# A check of payment rows against the PSP (Stripe), supplied by the caller when a key
# is configured: it returns, per payment id, the facts the PSP holds (captured and
# refunded amounts, status), and adds a row error for anything that disagrees.
PaymentVerifier = Callable[[Sequence["PaymentRow"], "RowErrors"], dict[str, "VerifiedPayment"]]


@dataclass(frozen=True, slots=True)
class VerifiedRefund:
    psp_reference: str
    amount: Money
    status: str  # pending, succeeded, failed, canceled
    reason: str | None
    created_at: str
    failure_reason: str | None = None


@dataclass(frozen=True, slots=True)
class VerifiedPayment:
    status: PaymentStatus
    amount: Money
    captured: Money
    refunded: Money
    updated_at: str
    capture_before: str | None = None
    refunds: tuple[VerifiedRefund, ...] = ()


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def import_file(
    ctx: Context,
    path: Path,
    *,
    kind: str | None = None,
    dry_run: bool = False,
    update: bool = False,
    verifier: PaymentVerifier | None = None,
) -> ImportResult:
    """Load invoices or payments; all or nothing."""
    from kollrefund import importer

    if kind is not None and kind not in importer.KINDS:
        raise UsageError(f"Unknown kind {kind!r}; use invoices or payments.")
    kind, rows = importer.read_file(path, kind)
    if kind == "invoices":
        return _import_invoices(ctx, path, importer.parse_invoices(path, rows), dry_run=dry_run, update=update)
    return _import_payments(ctx, path, importer.parse_payments(path, rows), dry_run=dry_run, verifier=verifier)


_INVOICE_FIELDS = ("customer", "total", "netsuite_id", "customer_netsuite_id", "stripe_customer", "issued_on", "due_on")


def _invoice_diff(old: Invoice, row: InvoiceRow) -> list[str]:
    def show(value: object) -> str:
        return value.display() if isinstance(value, Money) else repr(value)

    diffs = []
    for f in _INVOICE_FIELDS:
        before, after = getattr(old, f), getattr(row, f)
        if before != after:
            diffs.append(f"{f} {show(before)} → {show(after)}")
    return diffs


def _import_invoices(
    ctx: Context, path: Path, parsed: list[InvoiceRow], *, dry_run: bool, update: bool
) -> ImportResult:
    from kollrefund.importer import RowErrors

    with ctx.open_store(readonly=dry_run) as store:
        errors = RowErrors(path)
        existing = store.invoices_by_id(r.id for r in parsed)
        changed: list[tuple[InvoiceRow, Invoice]] = []
        changes: list[str] = []
        new_rows: list[tuple[Any, ...]] = []
        ts = iso(now())
        unchanged = 0
        payments_by_invoice = store.payments_for_invoices(existing) if existing else {}
        for row in parsed:
            old = existing.get(row.id)
            if old is None:
                new_rows.append(
                    (
                        row.id,
                        row.customer,
                        row.total.currency,
                        row.total.minor,
                        row.total.minor,
                        InvoiceStatus.UNPAID.value,
                        row.netsuite_id,
                        row.customer_netsuite_id,
                        row.stripe_customer,
                        row.issued_on,
                        row.due_on,
                        ts,
                        ts,
                    )
                )
                continue
            diffs = _invoice_diff(old, row)
            if not diffs:
                unchanged += 1
                continue
            if not update:
                errors.add(
                    row.where,
                    f"{row.id} is already in the cache and differs: {'; '.join(diffs)} "
                    "(run again with --update to apply)",
                )
                continue
            if row.total.currency != old.currency:
                errors.add(row.where, f"{row.id} is in {old.currency.upper()} in the cache; its currency cannot change")
                continue
            try:
                after = settle_invoice(
                    replace(
                        old,
                        customer=row.customer,
                        total=row.total,
                        netsuite_id=row.netsuite_id,
                        customer_netsuite_id=row.customer_netsuite_id,
                        stripe_customer=row.stripe_customer,
                        issued_on=row.issued_on,
                        due_on=row.due_on,
                    ),
                    payments_by_invoice.get(row.id, []),
                )
            except KollrefundError as exc:
                errors.add(row.where, exc.message.rstrip("."))
                continue
            changed.append((row, after))
            changes.append(f"{row.id}: {'; '.join(diffs)}")
        errors.raise_if_any()
        result = ImportResult("invoices", str(path), len(new_rows), unchanged, len(changed), dry_run, changes)
        if dry_run or (not new_rows and not changed):
            return result
        digest = _file_digest(path)
        with store.transaction():
            store.insert_invoices(new_rows)
            for row, after in changed:
                before = existing[row.id]
                store.save_invoice(after)
                store.audit(
                    AuditEntry(
                        action="invoice.update",
                        operator=ctx.operator,
                        subject_id=row.id,
                        invoice_id=row.id,
                        balance_before=before.balance,
                        balance_after=after.balance,
                        detail={"file": str(path), "sha256": digest, "changes": _invoice_diff(before, row)},
                    )
                )
            if new_rows:
                store.audit(
                    AuditEntry(
                        action="import.invoices",
                        operator=ctx.operator,
                        detail={
                            "file": str(path),
                            "sha256": digest,
                            "added": len(new_rows),
                            "first_id": new_rows[0][0],
                            "last_id": new_rows[-1][0],
                        },
                    )
                )
                # one row per invoice too, so `kollrefund log INV-9` shows where it came from
                store.audit_imported_invoices(new_rows, operator=ctx.operator, source=f"{path.name} sha256:{digest}")
        return result


def _import_payments(
    ctx: Context,
    path: Path,
    parsed: list[PaymentRow],
    *,
    dry_run: bool,
    verifier: PaymentVerifier | None,
) -> ImportResult:
    from kollrefund.importer import RowErrors

    with ctx.open_store(readonly=dry_run) as store:
        errors = RowErrors(path)
        invoices = store.invoices_by_id({r.invoice_id for r in parsed})
        known_ids = store.payment_ids(r.id for r in parsed)
        facts = verifier(parsed, errors) if verifier is not None else {}
        current = store.payments_for_invoices(invoices)
        planned: list[tuple[PaymentRow, Payment, Invoice, Invoice]] = []
        unchanged = 0
        at = now()
        for row in parsed:
            inv = invoices.get(row.invoice_id)
            if inv is None:
                errors.add(row.where, f"invoice {row.invoice_id} is not in the cache (import it first)")
                continue
            if row.id in known_ids:
                old = store.get_payment(row.id)
                if (old.invoice_id, old.amount, old.psp_reference) == (row.invoice_id, row.amount, row.psp_reference):
                    unchanged += 1
                else:
                    errors.add(row.where, f"payment {row.id} is already in the cache with other values")
                continue
            clash = store.find_payment_by_reference(row.psp_reference, row.psp)
            if clash is not None:
                errors.add(row.where, f"psp_reference {row.psp_reference} already belongs to {clash.id}")
                continue
            if row.id in facts or verifier is None:
                payment = _imported_payment(row, facts.get(row.id), at)
            else:
                continue  # the verifier has already named this row
            try:
                others = current.get(inv.id, [])
                check_applicable(inv, others, payment.amount)
                after = settle_invoice(inv, [*others, payment])
            except KollrefundError as exc:
                errors.add(row.where, exc.message.rstrip("."))
                continue
            current.setdefault(inv.id, []).append(payment)
            planned.append((row, payment, inv, after))
            invoices[inv.id] = after
        errors.raise_if_any()
        changes = [
            f"{p.id}: {p.status} {p.amount.display()} on {before.id}, "
            f"balance {before.balance.format()} → {after.balance.format()}"
            for _, p, before, after in planned
        ]
        result = ImportResult("payments", str(path), len(planned), unchanged, 0, dry_run, changes)
        if dry_run or not planned:
            return result
        digest = _file_digest(path)
        with store.transaction():
            for row, payment, before, after in planned:
                synced = row.netsuite_id is not None
                store.insert_payment(
                    payment,
                    ns_sync="synced" if synced else "pending",
                    capture_before=facts[row.id].capture_before if row.id in facts else None,
                )
                store.save_invoice(after)
                if not synced and payment.captured.minor > 0:
                    store.enqueue("payment", payment.id)
                for vr in facts[row.id].refunds if row.id in facts else ():
                    _import_refund(store, payment, vr)
                store.audit(
                    AuditEntry(
                        action="import.payment",
                        operator=ctx.operator,
                        subject_id=payment.id,
                        invoice_id=before.id,
                        payment_id=payment.id,
                        amount=payment.captured,
                        balance_before=before.balance,
                        balance_after=after.balance,
                        stripe_ref=payment.psp_reference if payment.psp == "stripe" else None,
                        netsuite_ref=row.netsuite_id,
                        detail={"file": str(path), "sha256": digest, "status": payment.status.value},
                    )
                )
        return result


def _import_refund(store: Store, payment: Payment, vr: VerifiedRefund) -> None:
    """A refund Stripe already holds for an imported payment gets its own RF id."""
    refund_id = store.next_id("RF")
    status = RefundStatus(vr.status)
    store.insert_refund(Refund(
        id=refund_id, payment_id=payment.id, amount=vr.amount, status=status, reason=vr.reason,
        psp_reference=vr.psp_reference, created_at=vr.created_at, failure_reason=vr.failure_reason,
    ))
    if status.counts and payment.netsuite_id is None:
        store.enqueue("refund", refund_id, depends_on=store.last_outbox_id(payment.id))


def _imported_payment(row: PaymentRow, fact: VerifiedPayment | None, at: Any) -> Payment:
    base = new_payment(
        id=row.id, invoice_id=row.invoice_id, amount=row.amount, psp_reference=row.psp_reference, at=at, psp=row.psp
    )
    base = replace(base, netsuite_id=row.netsuite_id)
    if fact is not None:
        return replace(
            base,
            status=fact.status,
            amount=fact.amount,
            captured=fact.captured,
            refunded=fact.refunded,
            updated_at=fact.updated_at,
        )
    if row.status == "authorized":
        return replace(base, status=PaymentStatus.AUTHORIZED)
    return capture(base, at=at)


# -- the audit trail ---------------------------------------------------------------------


def parse_since(text: str | None) -> str | None:
    """``--since 2026-11-01`` (or a full ISO time) as the audit table's UTC text."""
    if text is None:
        return None
    from datetime import UTC, date, datetime

    raw = text.strip()
    try:
        if len(raw) == 10:
            return date.fromisoformat(raw).isoformat() + "T00:00:00Z"
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"{text!r} is not a date like 2026-11-01 or a time like 2026-11-01T09:00:00Z.") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return iso(parsed)


def audit_log(ctx: Context, *, subject: str | None = None, since: str | None = None) -> list[dict[str, Any]]:
    """Every change, oldest first: who, when, what, why, with Stripe and NetSuite references."""
    since_text = parse_since(since)
    with ctx.open_store(readonly=True) as store:
        if subject is not None and store.find_invoice(subject) is None:
            try:
                store.get_payment(subject)
            except NotFound:
                try:
                    store.get_refund(subject)
                except NotFound:
                    raise NotFound(f"No invoice, payment or refund {subject} in the cache.") from None
        return store.audit_rows(subject=subject, since=since_text)
