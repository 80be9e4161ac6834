"""Pushing the outbox to NetSuite: payments, then refunds, then a read-back of each invoice.

What NetSuite sees (SPEC): a payment is a ``customerPayment`` (externalId = the
local payment id) applied to the invoice; a refund lowers that payment's
``apply`` line on the invoice (PATCH; at zero the line is unapplied) and creates
a ``customerRefund`` (externalId = the local refund id) applied to the payment.
So the invoice reads Open with its amount remaining and the payment stays listed.

Every write is idempotent -- creates are upserts by external id, the PATCH sets
an absolute amount -- so a lost response, a crash or a second run cannot make a
duplicate. A file lock keeps two ``sync`` runs from writing at once: the second
waits for the first, then pushes whatever is still pending (usually nothing).
HTTP runs on worker threads; every SQLite write happens on the calling thread.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from kollrefund import faults
from kollrefund.actions import Context
from kollrefund.domain import Invoice, Payment, Refund
from kollrefund.errors import ConfigError, KollrefundError, ProviderRejected, RefusedError
from kollrefund.money import Money
from kollrefund.store import OutboxRow, Store

SYNC_LOCK_WAIT_SECONDS = 120.0


@dataclass
class SyncItem:
    """One outbox row, built into the NetSuite requests it needs (or the reason it can't be)."""

    row: OutboxRow
    invoice_id: str
    summary: str
    problem: str | None = None
    requests: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)


@dataclass
class SyncReport:
    dry_run: bool
    synced: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    pending: dict[str, str] = field(default_factory=dict)
    planned: list[SyncItem] = field(default_factory=list)
    drift: list[dict[str, str]] = field(default_factory=list)
    requests: int = 0

    @property
    def complete(self) -> bool:
        return not self.failed and not self.pending


Progress = Callable[[str, int, int], None]


def client_config(settings: Any) -> Any:
    """A NetSuiteConfig from settings; ConfigError names the first missing key."""
    from kollrefund.netsuite import NetSuiteConfig
    from kollrefund.settings import require

    ns = settings.netsuite
    require(settings, "netsuite.account_id", *ns.credential_keys())

    def secret(value: Any) -> str | None:
        return value.get_secret_value() if value is not None else None

    private_key = None
    if ns.auth == "m2m":
        try:
            private_key = Path(ns.private_key_path).read_text()
        except OSError as exc:
            raise ConfigError(f"netsuite.private_key_path {ns.private_key_path} cannot be read ({exc.strerror}).") \
                from None
    return NetSuiteConfig(
        account_id=ns.account_id, base_url=ns.origin(), auth=ns.auth,
        consumer_key=secret(ns.consumer_key), consumer_secret=secret(ns.consumer_secret),
        token_id=secret(ns.token_id), token_secret=secret(ns.token_secret), client_id=secret(ns.client_id),
        certificate_id=ns.certificate_id, private_key_pem=private_key, concurrency=ns.concurrency,
        timeout_seconds=ns.timeout_seconds, max_retries=ns.max_retries,
    )


# -- building requests (no network) ----------------------------------------------------


def _ref(value: str) -> dict[str, str]:
    return {"id": value}


def _major(m: Money) -> str:
    return m.format()


def _applied_after(store: Store, payment: Payment, refund: Refund) -> Money:
    """What of the payment stays applied to the invoice once this refund (and those before it) is in."""
    applied = payment.captured
    for r in store.refunds_for_payment(payment.id):
        if r.status.counts or r.id == refund.id:
            applied = applied - r.amount
        if r.id == refund.id:
            break
    return applied


def build(store: Store, settings: Any, row: OutboxRow) -> SyncItem:
    ns = settings.netsuite
    if row.kind == "payment":
        p = store.get_payment(row.record_id)
        inv = store.get_invoice(p.invoice_id)
        item = SyncItem(row, inv.id, f"customerPayment {p.id}: {p.captured.display()} applied to {inv.id}")
        item.problem = _missing(inv, ns, "payment_account_id")
        if item.problem is None:
            assert inv.netsuite_id is not None and inv.customer_netsuite_id is not None
            body = {
                "externalId": p.id,
                "customer": _ref(inv.customer_netsuite_id),
                "account": _ref(ns.payment_account_id),
                "payment": _major(p.captured),
                "memo": f"Stripe {p.psp_reference} (kollrefund {p.id})",
                "apply": {"items": [{"doc": _ref(inv.netsuite_id), "apply": True, "amount": _major(p.captured)}]},
            }
            item.requests.append(("PUT", f"customerPayment/eid:{p.id}", body))
        return item
    if row.kind == "refund":
        r = store.get_refund(row.record_id)
        p = store.get_payment(r.payment_id)
        inv = store.get_invoice(p.invoice_id)
        remaining = _applied_after(store, p, r)
        item = SyncItem(row, inv.id, f"customerRefund {r.id}: {r.amount.display()} on {p.id}; "
                                     f"{p.id} stays applied to {inv.id} for {remaining.format()}")
        item.problem = _missing(inv, ns, "refund_account_id") or _missing(inv, ns, "refund_payment_method_id")
        if item.problem is None and p.netsuite_id is None:
            item.problem = f"payment {p.id} is not in NetSuite yet"
        if item.problem is None:
            assert inv.netsuite_id is not None and inv.customer_netsuite_id is not None and p.netsuite_id
            line: dict[str, Any] = {"doc": _ref(inv.netsuite_id), "apply": remaining.minor > 0}
            if remaining.minor > 0:
                line["amount"] = _major(remaining)
            item.requests.append(("PATCH", f"customerPayment/{p.netsuite_id}", {"apply": {"items": [line]}}))
            body = {
                "externalId": r.id,
                "customer": _ref(inv.customer_netsuite_id),
                "account": _ref(ns.refund_account_id),
                "paymentMethod": _ref(ns.refund_payment_method_id),
                "memo": f"Stripe {r.psp_reference} refund of {p.id} (kollrefund {r.id})",
                "apply": {"items": [{"doc": _ref(p.netsuite_id), "apply": True, "amount": _major(r.amount)}]},
            }
            item.requests.append(("PUT", f"customerRefund/eid:{r.id}", body))
        return item
    return SyncItem(row, "", f"{row.kind} {row.record_id}", problem=f"unknown outbox kind {row.kind!r}")


def _missing(inv: Invoice, ns: Any, key: str) -> str | None:
    if inv.netsuite_id is None:
        return f"invoice {inv.id} has no netsuite_id (import it with one, or run `kollrefund pull`)"
    if inv.customer_netsuite_id is None:
        return f"invoice {inv.id} has no customer_netsuite_id (import it with one, or run `kollrefund pull`)"
    if not getattr(ns, key):
        return f"netsuite.{key} is not set (KOLLREFUND_NETSUITE__{key.upper()})"
    return None


# -- running -----------------------------------------------------------------------


def sync(ctx: Context, *, dry_run: bool, confirm: Callable[[int], None],
         progress: Progress | None = None) -> SyncReport:
    """Push every change NetSuite has not seen; returns what happened to each record."""
    settings = ctx.settings
    with ctx.open_store(readonly=dry_run) as store:
        rows = store.outbox_rows()
        report = SyncReport(dry_run=dry_run)
        if dry_run:
            report.planned = [build(store, settings, r) for r in rows]
            return report
        config = client_config(settings)  # bad configuration: exit 3 before anything is sent
        if not rows:
            return report
        confirm(len(rows))
        lock = FileLock(str(ctx.cache_path.parent / f"{ctx.cache_path.name}.sync.lock"))
        try:
            lock.acquire(timeout=SYNC_LOCK_WAIT_SECONDS)
        except Timeout:
            raise RefusedError("Another kollrefund sync has held the lock for two minutes; nothing was sent.",
                               hint="Run again when it has finished.") from None
        try:
            from kollrefund.netsuite import NetSuiteClient

            with NetSuiteClient(config) as client:
                _drain(store, settings, client, report, progress)
        finally:
            lock.release()
        return report


def _drain(store: Store, settings: Any, client: Any, report: SyncReport, progress: Progress | None) -> None:
    rows = store.outbox_rows()  # again, under the lock: another run may have pushed them
    total = len(rows)
    done = 0
    touched: set[str] = set()
    # Wave order is dependency order: a payment before its refunds, and each refund's
    # PATCH before its customerRefund (inside one job). Refunds of one payment run in
    # order, one job per payment, because each PATCH sets the amount left applied.
    for wave in ("payment", "refund"):
        items = [build(store, settings, r) for r in store.outbox_rows() if r.kind == wave]
        groups: dict[str, list[SyncItem]] = {}
        for item in items:
            if item.problem is not None:
                _record_problem(store, item, item.problem, failed=True, report=report)
                done += 1
                if progress:
                    progress(item.summary, done, total)
                continue
            key = item.requests[0][1] if wave == "refund" else item.row.record_id
            groups.setdefault(key, []).append(item)

        def job(group: list[SyncItem]) -> list[tuple[SyncItem, list[str] | Exception]]:
            out: list[tuple[SyncItem, list[str] | Exception]] = []
            for item in group:
                try:
                    ids = []
                    for method, path, body in item.requests:
                        faults.point(f"sync.before_{method.lower()}")
                        if method == "PUT":
                            record_type, _, ext = path.partition("/eid:")
                            ids.append(client.upsert(record_type, ext, body))
                        else:
                            record_type, _, internal = path.partition("/")
                            client.patch(record_type, internal, body)
                        faults.point(f"sync.after_{method.lower()}")
                    out.append((item, ids))
                except Exception as exc:
                    out.append((item, exc))
                    # later refunds of this payment depend on this one: leave them pending
                    for rest in group[len(out):]:
                        out.append((rest, KollrefundError(f"waits for {item.row.record_id}")))
                    break
            return out

        def on_done(_index: int, outcome: Any) -> None:
            nonlocal done
            if isinstance(outcome, Exception):  # a bug in job(): never lose the record
                raise outcome
            for item, result in outcome:
                done += 1
                report.requests += len(item.requests)
                if isinstance(result, Exception):
                    failed = isinstance(result, ProviderRejected)
                    message = result.message if isinstance(result, KollrefundError) else type(result).__name__
                    _record_problem(store, item, message, failed=failed, report=report)
                else:
                    _record_success(store, item, result, report)
                    touched.add(item.invoice_id)
                if progress:
                    progress(item.summary, done, total)

        client.run_all([lambda g=g: job(g) for g in groups.values()], on_done=on_done)
    _read_back(store, client, sorted(touched), report)


def _record_success(store: Store, item: SyncItem, ids: Sequence[str], report: SyncReport) -> None:
    table = "payments" if item.row.kind == "payment" else "refunds"
    with store.transaction():
        store.set_sync(table, item.row.record_id, state="synced", netsuite_id=ids[-1] if ids else None)
        store.outbox_done(item.row.id)
    faults.point("sync.local_commit")
    report.synced.append(item.row.record_id)


def _record_problem(store: Store, item: SyncItem, message: str, *, failed: bool, report: SyncReport) -> None:
    table = "payments" if item.row.kind == "payment" else "refunds" if item.row.kind == "refund" else None
    with store.transaction():
        if table:
            store.set_sync(table, item.row.record_id, state="failed" if failed else "pending", error=message)
        store.outbox_problem(item.row.id, failed=failed, error=message)
    (report.failed if failed else report.pending)[item.row.record_id] = message


def _read_back(store: Store, client: Any, invoice_ids: list[str], report: SyncReport) -> None:
    """Read each touched invoice back; a disagreement with the local balance is drift."""
    from kollrefund.netsuite import amount, status_name

    invoices = [store.get_invoice(i) for i in invoice_ids]
    jobs = [lambda inv=inv: client.get("invoice", inv.netsuite_id) for inv in invoices if inv.netsuite_id]
    wanted = [inv for inv in invoices if inv.netsuite_id]

    def on_done(index: int, outcome: Any) -> None:
        inv = wanted[index]
        report.requests += 1
        if isinstance(outcome, Exception):
            report.drift.append({"invoice": inv.id, "problem": f"could not read it back: {outcome}"})
            return
        status = status_name(outcome.get("status"))
        remaining = amount(outcome.get("amountRemaining", "0"))
        with store.transaction():
            store.set_invoice_netsuite_view(inv.id, status=status, amount_remaining=str(remaining))
        local = inv.balance.to_decimal()
        expected = "Paid In Full" if inv.balance.minor == 0 else "Open"
        if remaining != local or status != expected:
            report.drift.append({
                "invoice": inv.id, "netsuite_status": status, "netsuite_amount_remaining": str(remaining),
                "local_status": inv.status.value, "local_balance": inv.balance.format(),
            })

    faults.point("sync.before_read_back")
    client.run_all(jobs, on_done=on_done)
