"""``pull``: open invoices from NetSuite (SuiteQL) into the cache, and expiring authorizations.

An invoice new to the cache is added; one already there (found by its NetSuite
internal id first, then by its external id or document number) is updated only
where NetSuite changed it; a change that conflicts with local payments (a new total
below what was paid, another currency) is reported, not written.

Also reported and not written: a new invoice NetSuite shows as paid in part (its
payments are not in the cache, so its balance here would be wrong and `collect`
could charge more than is owed), and a NetSuite invoice whose local id already
belongs to an invoice linked to another NetSuite record.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from kollrefund.actions import Context
from kollrefund.domain import Invoice, Payment, from_iso, iso, new_invoice, settle_invoice
from kollrefund.errors import KollrefundError, UsageError
from kollrefund.money import Money, normalize_currency
from kollrefund.store import AuditEntry, now

# Card networks' windows when Stripe gives no capture_before: 7 days for
# customer-initiated online card payments (Visa's merchant-initiated ones lapse
# after about 5 -- see README).
DEFAULT_AUTHORIZATION_DAYS = 7


@dataclass
class PullReport:
    dry_run: bool
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: int = 0
    conflicts: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _local_id(row: dict[str, Any]) -> str:
    return str(row.get("externalid") or row.get("tranid") or f"NS-{row['id']}")


def _show(value: Decimal, currency: str) -> str:
    try:
        return Money.parse(value, currency).display()
    except KollrefundError:
        return f"{value} {currency.upper()}"


def _from_row(row: dict[str, Any]) -> Invoice:
    from kollrefund.netsuite import amount

    currency = normalize_currency(str(row.get("currency") or ""))
    total = Money.parse(amount(row["foreigntotal"]), currency)
    return new_invoice(
        _local_id(row), str(row.get("customername") or row.get("entity") or "?"), total,
        netsuite_id=str(row["id"]), customer_netsuite_id=str(row["entity"]) if row.get("entity") else None,
    )


def pull(ctx: Context, *, since: str | None, dry_run: bool, confirm: Callable[[int], None]) -> PullReport:
    from kollrefund.netsuite import NetSuiteClient, amount, open_invoices_query
    from kollrefund.sync import client_config

    since_date = None
    if since is not None:
        try:
            since_date = date.fromisoformat(since.strip())
        except ValueError:
            raise UsageError(f"{since!r} is not a date like 2026-11-01.") from None
    config = client_config(ctx.settings)
    with NetSuiteClient(config) as client:
        rows = list(client.suiteql(open_invoices_query(since_date)))
    report = PullReport(dry_run=dry_run)
    with ctx.open_store(readonly=dry_run) as store:
        plan: list[tuple[Invoice | None, Invoice]] = []
        by_netsuite_id = {inv.netsuite_id: inv for inv in store.list_invoices() if inv.netsuite_id}
        planned_ids: set[str] = set()
        for row in rows:
            try:
                fresh = _from_row(row)
            except KollrefundError as exc:
                report.conflicts.append(f"NetSuite invoice {row.get('id')}: {exc.message}")
                continue
            remaining = amount(row.get("foreignamountunpaid", "0"))
            linked = by_netsuite_id.get(fresh.netsuite_id) if fresh.netsuite_id else None
            old = linked or store.find_invoice(fresh.id)
            if old is not None and old.netsuite_id and old.netsuite_id != fresh.netsuite_id:
                report.conflicts.append(
                    f"{old.id}: linked here to NetSuite invoice {old.netsuite_id}, but NetSuite invoice "
                    f"{fresh.netsuite_id} also carries that id; not changed")
                continue
            if linked is not None and row.get("externalid") and str(row["externalid"]) != linked.id:
                report.conflicts.append(
                    f"{linked.id}: linked here to NetSuite invoice {fresh.netsuite_id}, whose external id is "
                    f"{row['externalid']}; not changed")
                continue
            if old is None:
                if fresh.id in planned_ids:
                    report.conflicts.append(f"{fresh.id}: NetSuite has more than one open invoice with this id "
                                            f"(another is {fresh.netsuite_id}); not added")
                    continue
                if remaining != fresh.total.to_decimal():
                    report.conflicts.append(
                        f"{fresh.id}: NetSuite shows {_show(remaining, fresh.currency)} remaining of "
                        f"{fresh.total.display()}; it was paid in part outside kollrefund, so it is not added "
                        "(import it with its payments instead)")
                    continue
                plan.append((None, fresh))
                planned_ids.add(fresh.id)
                report.added.append(fresh.id)
                continue
            merged = replace(old, customer=fresh.customer, netsuite_id=fresh.netsuite_id,
                             customer_netsuite_id=fresh.customer_netsuite_id or old.customer_netsuite_id)
            if fresh.currency != old.currency:
                report.conflicts.append(f"{old.id}: NetSuite has it in {fresh.currency.upper()}, the cache in "
                                        f"{old.currency.upper()}; not changed")
                continue
            if fresh.total != old.total:
                try:
                    merged = settle_invoice(replace(merged, total=fresh.total), store.payments_for_invoice(old.id))
                except KollrefundError:
                    report.conflicts.append(f"{old.id}: NetSuite's total {fresh.total.display()} is below what was "
                                            f"paid here; not changed")
                    continue
            if merged == old:
                report.unchanged += 1
            else:
                plan.append((old, merged))
                report.updated.append(old.id)
        if dry_run or not plan:
            return report
        confirm(len(plan))
        with store.transaction():
            for old, inv in plan:
                if old is None:
                    ts = iso(now())
                    store.insert_invoices([(
                        inv.id, inv.customer, inv.currency, inv.total.minor, inv.balance.minor, inv.status.value,
                        inv.netsuite_id, inv.customer_netsuite_id, None, None, None, ts, ts,
                    )])
                else:
                    store.save_invoice(inv)
                store.audit(AuditEntry(
                    action="invoice.pulled" if old is None else "invoice.pull_update", operator=ctx.operator,
                    subject_id=inv.id, invoice_id=inv.id, balance_before=old.balance if old else None,
                    balance_after=inv.balance, netsuite_ref=inv.netsuite_id,
                    detail={"source": "NetSuite SuiteQL", "changes": _changes(old, inv)},
                ))
    return report


_PULLED_FIELDS = ("customer", "currency", "total", "balance", "status", "netsuite_id", "customer_netsuite_id")


def _changes(old: Invoice | None, new: Invoice) -> list[str]:
    """What a pull wrote, field by field, for the audit trail."""

    def show(value: object) -> str:
        return value.display() if isinstance(value, Money) else str(getattr(value, "value", value))

    out = []
    for name in _PULLED_FIELDS:
        after = getattr(new, name)
        if old is None:
            out.append(f"{name} {show(after)}")
        elif getattr(old, name) != after:
            out.append(f"{name} {show(getattr(old, name))} → {show(after)}")
    return out


@dataclass(frozen=True, slots=True)
class Expiring:
    payment: Payment
    deadline: str
    source: str  # "stripe" (capture_before) or "card network window"
    days_left: float


def expiring(ctx: Context, *, days: int) -> list[Expiring]:
    """Authorized payments whose authorization lapses within ``days`` days."""
    if days < 0 or days > 60:
        raise UsageError(f"--days must be between 0 and 60, not {days}.")
    at = now()
    horizon = at + timedelta(days=days)
    out: list[Expiring] = []
    with ctx.open_store(readonly=True) as store:
        for p, capture_before, created_at in store.authorized_payments():
            if capture_before:
                deadline = from_iso(capture_before)
                source = "stripe"
            else:
                made = from_iso(created_at)
                deadline = made + timedelta(days=DEFAULT_AUTHORIZATION_DAYS)
                source = "card network window"
            if deadline <= horizon:
                out.append(Expiring(p, iso(deadline), source, round((deadline - at).total_seconds() / 86400, 1)))
    return sorted(out, key=lambda e: e.deadline)
