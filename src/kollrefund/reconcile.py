"""Reconcile: local ⇄ Stripe ⇄ NetSuite, amount by amount, with no webhook endpoint.

Which payments are read from Stripe: those updated since ``--since`` (default: the
stored cursor less a day), every payment with an authorization or a refund still
pending, every payment with a refund that counts created in the last
``REFUND_WATCH`` (a refund Stripe reported as succeeded can fail days or weeks
later), every payment that has a refund created since the cursor (a refund made
in the Dashboard), and every payment the last ``--fix`` left with drift (so drift
is reported until someone resolves it, however far the cursor has moved). Stripe's
refunds are matched to local ones by ``metadata.kollrefund_refund_id`` first, then
by Stripe id, so however often reconcile runs one Stripe refund is one local refund.

A drift counts as fixed only when Stripe and the cache agree on it after the fix;
what reconcile cannot record (say, a payment imported as 120.00 that Stripe
captured as 100.00) stays unresolved, and the exit status says so.

NetSuite: each synced invoice is read back (or, without NetSuite configured, its
last known state from ``sync`` is used) and compared with the local balance.
NetSuite drift is reported, never overwritten: a hand edit there needs a person.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from kollrefund import stripe_truth
from kollrefund.actions import Context, parse_since
from kollrefund.domain import Payment, PaymentStatus, from_iso, iso
from kollrefund.errors import KollrefundError
from kollrefund.movements import gateway, money_lock
from kollrefund.store import Store, now

CURSOR_KEY = "reconcile.stripe_cursor"
CURSOR_OVERLAP = timedelta(days=1)  # refunds can be created a little before we last looked
UNRESOLVED_KEY = "reconcile.unresolved_payments"  # JSON list of payment ids left with drift by --fix
REFUND_WATCH = timedelta(days=120)  # a refund that counts is read again for this long after it was made


@dataclass
class Drift:
    record: str
    what: str
    local: str
    stripe: str = ""
    netsuite: str = ""
    fixed: bool = False


@dataclass
class ReconcileReport:
    fix: bool
    dry_run: bool
    checked_payments: int = 0
    checked_invoices: int = 0
    drift: list[Drift] = field(default_factory=list)
    fixes: list[str] = field(default_factory=list)

    @property
    def unresolved(self) -> list[Drift]:
        return [d for d in self.drift if not d.fixed]


Progress = Callable[[str, int, int], None]


def _stripe_drift(p: Payment, sp: Any) -> list[Drift]:
    out = []
    if p.captured != sp.captured:
        out.append(Drift(p.id, "captured", p.captured.display(), sp.captured.display()))
    if p.refunded != sp.refunded:
        out.append(Drift(p.id, "refunded", p.refunded.display(), sp.refunded.display()))
    if stripe_truth.status_differs(p, sp):
        out.append(Drift(p.id, "status", p.status.value, sp.status))
    return out


def _refund_drift(store: Store, p: Payment, sp: Any) -> list[Drift]:
    """Refunds whose status differs, or that Stripe has and the cache does not."""
    local = store.refunds_for_payment(p.id)
    by_id = {r.id: r for r in local}
    by_ref = {r.psp_reference: r for r in local if r.psp_reference}
    out = []
    for sr in sp.refunds:
        mine = (by_id.get(sr.local_id) if sr.local_id else None) or by_ref.get(sr.id)
        if mine is None:
            out.append(Drift(p.id, f"refund {sr.id}", "missing", f"{sr.amount.display()} {sr.status}"))
        elif mine.status is not stripe_truth.refund_status(sr.status):
            out.append(Drift(mine.id, f"refund {sr.id} status", mine.status.value, sr.status))
    return out


def _candidates(store: Store, gw: Any, since: str | None) -> tuple[list[Payment], int]:
    started = now()
    cursor = store.get_meta(CURSOR_KEY)
    start = since or (iso(from_iso(cursor) - CURSOR_OVERLAP) if cursor else None)
    chosen: dict[str, Payment] = {p.id: p for p in store.stripe_payments(updated_since=start)}
    open_refunds = store.payments_with_open_refunds()
    left_over = set(json.loads(store.get_meta(UNRESOLVED_KEY) or "[]"))
    watch_from = iso(started - REFUND_WATCH)
    for p in store.stripe_payments():
        if (
            p.id in open_refunds
            or p.id in left_over
            or p.status in (PaymentStatus.AUTHORIZED, PaymentStatus.PENDING)
            or (p.refunded.minor > 0 and any(
                r.status.counts and r.created_at >= watch_from for r in store.refunds_for_payment(p.id)))
        ):
            chosen.setdefault(p.id, p)
    created_gte = int(from_iso(start).timestamp()) if start else 0
    for pi_id, _refund in gw.refunds_since(created_gte):
        found = store.find_payment_by_reference(pi_id) if pi_id else None
        if found is not None:
            chosen.setdefault(found.id, found)
    return sorted(chosen.values(), key=lambda p: p.id), int(started.timestamp())


def reconcile(
    ctx: Context, *, since: str | None, fix: bool, dry_run: bool, confirm: Callable[[int], None],
    progress: Progress | None = None,
) -> ReconcileReport:
    since_text = parse_since(since)
    report = ReconcileReport(fix=fix, dry_run=dry_run)
    gw = gateway(ctx, live=True)  # reconcile reads Stripe and writes only the cache: no money moves
    with ctx.open_store(readonly=dry_run or not fix) as store:
        payments, started = _candidates(store, gw, since_text)
        found: list[tuple[Payment, Any, list[Drift]]] = []
        missing: list[str] = []  # payments whose PaymentIntent Stripe does not have
        left_with_drift: set[str] = set()
        for i, p in enumerate(payments, start=1):
            assert p.psp_reference is not None
            sp = gw.find_payment(p.psp_reference)
            if sp is None:
                report.drift.append(Drift(p.id, "PaymentIntent", p.psp_reference, "does not exist"))
                missing.append(p.id)
            else:
                drift = _stripe_drift(p, sp) + _refund_drift(store, p, sp)
                if drift:
                    found.append((p, sp, drift))
                    report.drift.extend(drift)
            report.checked_payments += 1
            if progress:
                progress(f"Stripe {p.id}", i, len(payments))
        if fix and not dry_run and found:
            confirm(len(found))
            for p, _sp, drift in found:
                with money_lock(ctx, p.id):
                    current = store.get_payment(p.id)
                    assert current.psp_reference is not None
                    fresh = gw.payment(current.psp_reference)  # Stripe again, under the lock
                    try:
                        with store.transaction():
                            report.fixes += stripe_truth.absorb(store, operator=ctx.operator, payment=current,
                                                                sp=fresh, why="reconcile --fix")
                    except KollrefundError as exc:
                        report.fixes.append(f"{p.id}: not fixed: {exc.message}")
                        left_with_drift.add(p.id)
                        continue
                    # fixed is what Stripe and the cache now agree on, nothing more
                    after = store.get_payment(p.id)
                    remaining = _stripe_drift(after, fresh) + _refund_drift(store, after, fresh)
                    still = {(r.record, r.what) for r in remaining}
                    for d in drift:
                        d.fixed = (d.record, d.what) not in still
                    known = {(d.record, d.what) for d in drift}
                    report.drift += [r for r in remaining if (r.record, r.what) not in known]
                    if remaining:
                        left_with_drift.add(p.id)
        if fix and not dry_run:
            left_with_drift.update(p.id for p, _sp, drift in found if any(not d.fixed for d in drift))
            left_with_drift.update(missing)
            with store.transaction():
                store.set_meta(CURSOR_KEY, iso(datetime.fromtimestamp(started, UTC)))
                store.set_meta(UNRESOLVED_KEY, json.dumps(sorted(left_with_drift)))
        _netsuite(ctx, store, report)
    return report


def _netsuite(ctx: Context, store: Store, report: ReconcileReport) -> None:
    """Compare each invoice NetSuite has seen with the local balance."""
    invoices = [i for i in store.list_invoices() if i.netsuite_id and store.invoice_sync(i).sync == "synced"]
    if not invoices:
        return
    fresh: dict[str, tuple[str, Decimal]] = {}
    ns = ctx.settings.netsuite
    if ns.account_id and all(getattr(ns, k.split(".")[1]) for k in ns.credential_keys()):
        from kollrefund.netsuite import NetSuiteClient, amount, status_name
        from kollrefund.sync import client_config

        def reader(client: Any, netsuite_id: str) -> Callable[[], dict[str, Any]]:
            return lambda: client.get("invoice", netsuite_id)

        with NetSuiteClient(client_config(ctx.settings)) as client:
            results = client.run_all([reader(client, inv.netsuite_id) for inv in invoices if inv.netsuite_id])
        for inv, res in zip(invoices, results, strict=True):
            if isinstance(res, Exception):
                report.drift.append(
                    Drift(inv.id, "NetSuite invoice", inv.balance.display(), netsuite=f"unreadable: {res}")
                )
                continue
            fresh[inv.id] = (status_name(res.get("status")), amount(res.get("amountRemaining", "0")))
    for inv in invoices:
        report.checked_invoices += 1
        if inv.id in fresh:
            status, remaining = fresh[inv.id]
        else:
            known_status, known_remaining, _at = store.invoice_netsuite_view(inv.id)
            if known_status is None or known_remaining is None:
                continue
            status, remaining = known_status, Decimal(known_remaining)
        expected = "Paid In Full" if inv.balance.minor == 0 else "Open"
        if remaining != inv.balance.to_decimal() or status != expected:
            report.drift.append(Drift(inv.id, "amount remaining", f"{inv.balance.format()} ({inv.status.value})",
                                      netsuite=f"{remaining} ({status})"))
