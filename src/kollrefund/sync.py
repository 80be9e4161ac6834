"""Pushing the outbox to NetSuite: per invoice, payments and refunds, then a read-back.

What NetSuite sees (SPEC): a payment is a ``customerPayment`` (externalId = the
local payment id) applied to the invoice; a refund lowers that payment's
``apply`` line on the invoice (PATCH; at zero the line is unapplied) and creates
a ``customerRefund`` (externalId = the local refund id) applied to the payment.
So the invoice reads Open with its amount remaining and the payment stays listed.
Each invoice's records go out in one job, in dependency order (see "planning"),
and the invoice is read back at the end of its job; invoices run in parallel.

Every write is idempotent -- creates are upserts by external id, the PATCH sets
an absolute amount that only goes down as refunds are added -- so a lost response,
a crash or a second run cannot make a duplicate or ask NetSuite for the impossible.
A file lock keeps two ``sync`` runs from writing at once: the second waits for the
first (up to two minutes), then pushes whatever is still pending (usually nothing).
NetSuite refusing the credentials (401) stops the run: nothing more is sent, the
records stay pending, exit 5. HTTP runs on worker threads; every SQLite write happens
on the calling thread, committed in small batches.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from kollrefund import faults
from kollrefund.actions import Context
from kollrefund.domain import Invoice, Payment, Refund
from kollrefund.errors import ConfigError, KollrefundError, ProviderRejected, RefusedError
from kollrefund.money import Money
from kollrefund.store import AuditEntry, OutboxRow, Store

SYNC_LOCK_WAIT_SECONDS = 120.0


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


# -- planning (no network) ------------------------------------------------------------
#
# Records are pushed per invoice, because what NetSuite accepts on an invoice depends on
# what is already applied to it: a second payment can only be applied once a refunded one
# is unapplied. Each invoice's records go out in one job, in this order:
#   1. refunds of payments NetSuite already has: one PATCH setting the payment's apply line
#      to what stays applied once *all* of this run's refunds of it are in, then a PUT of
#      each customerRefund;
#   2. new payments: a PUT applying what stays applied after their refunds (so a payment
#      refunded before its first sync never over-applies the invoice);
#   3. refunds of those new payments: a PUT each (their payment's PUT already lowered it).
# The amount a PATCH or PUT sets is absolute and only ever goes down as refunds are added,
# so a rerun after a crash or a lost answer -- whatever had reached NetSuite -- sends the
# same or a lower amount and can never ask NetSuite to apply more than it has left.
# A record that cannot be built (a key missing) fails before anything is sent for it; what
# depends on a record that fails waits (stays pending).


@dataclass
class SyncItem:
    """One outbox row, built into the NetSuite requests it needs (or the reason it can't be)."""

    row: OutboxRow
    invoice_id: str
    summary: str
    problem: str | None = None
    requests: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    waits_for: str | None = None  # a record of this run it depends on that cannot be sent


@dataclass
class InvoiceJob:
    """Everything this run sends for one invoice, in the order it must be sent."""

    invoice: Invoice
    items: list[SyncItem]
    known_ids: dict[str, str]  # payment id -> NetSuite internal id, for payments already there


def _ref(value: str) -> dict[str, str]:
    return {"id": value}


def _major(m: Money) -> Decimal:
    """An amount for NetSuite: a JSON number in major units, exact (``Decimal``, never float)."""
    return m.to_decimal()


def placeholder(payment_id: str) -> str:
    """Stands for the internal id NetSuite gives `payment_id` earlier in the same run."""
    return f"<netsuite id of {payment_id}>"


def plan(store: Store, settings: Any, rows: Sequence[OutboxRow]) -> tuple[list[SyncItem], list[InvoiceJob]]:
    """(items that cannot be sent at all, one job per invoice). Reads the cache only."""
    ns = settings.netsuite
    unbuildable: list[SyncItem] = []
    payment_rows: dict[str, list[OutboxRow]] = {}
    refund_rows: dict[str, list[OutboxRow]] = {}  # by payment id, in outbox order
    refund_ids: set[str] = set()
    invoice_order: list[str] = []
    for row in rows:
        if row.kind == "payment":
            p = store.get_payment(row.record_id)
            payment_rows.setdefault(p.id, []).append(row)
        elif row.kind == "refund":
            r = store.get_refund(row.record_id)
            p = store.get_payment(r.payment_id)
            refund_rows.setdefault(p.id, []).append(row)
            refund_ids.add(r.id)
        else:
            unbuildable.append(SyncItem(row, "", f"{row.kind} {row.record_id}",
                                        problem=f"unknown outbox kind {row.kind!r}"))
            continue
        if p.invoice_id not in invoice_order:
            invoice_order.append(p.invoice_id)

    jobs: list[InvoiceJob] = []
    for invoice_id in invoice_order:
        inv = store.get_invoice(invoice_id)
        pays = [p for p in store.payments_for_invoice(inv.id) if p.id in payment_rows or p.id in refund_rows]
        job = InvoiceJob(inv, [], {p.id: p.netsuite_id for p in pays if p.netsuite_id})
        first: list[SyncItem] = []
        middle: list[SyncItem] = []
        last: list[SyncItem] = []
        for p in pays:
            new = p.id in payment_rows
            refund_items, applied = _refund_items(store, ns, inv, p, refund_rows.get(p.id, []), refund_ids,
                                                  patch=not new)
            if new:
                rows_p = payment_rows[p.id]
                item = _payment_item(ns, inv, p, rows_p[0], applied)
                middle.append(item)
                # the same payment queued twice (e.g. imported, then captured): one PUT for both
                middle += [SyncItem(r, inv.id, f"customerPayment {p.id} (again)",
                                    waits_for=p.id if item.problem else None) for r in rows_p[1:]]
                if item.problem is not None:
                    for ri in refund_items:
                        if ri.problem is None:
                            ri.requests = []
                            ri.waits_for = ri.waits_for or p.id
                last += refund_items
            else:
                first += refund_items
        job.items = first + middle + last
        jobs.append(job)
    return unbuildable, jobs


def _payment_item(ns: Any, inv: Invoice, p: Payment, row: OutboxRow, applied: Money) -> SyncItem:
    item = SyncItem(row, inv.id, f"customerPayment {p.id}: {p.captured.display()}, "
                                 f"{applied.display()} applied to {inv.id}")
    item.problem = _missing(inv, ns, "payment_account_id")
    if item.problem is None:
        assert inv.netsuite_id is not None and inv.customer_netsuite_id is not None
        line: dict[str, Any] = {"doc": _ref(inv.netsuite_id), "apply": applied.minor > 0}
        if applied.minor > 0:
            line["amount"] = _major(applied)
        body = {
            "externalId": p.id,
            "customer": _ref(inv.customer_netsuite_id),
            "account": _ref(ns.payment_account_id),
            "payment": _major(p.captured),
            "memo": f"Stripe {p.psp_reference} (kollrefund {p.id})",
            "apply": {"items": [line]},
        }
        item.requests.append(("PUT", f"customerPayment/eid:{p.id}", body))
    return item


def _refund_items(store: Store, ns: Any, inv: Invoice, p: Payment, rows: list[OutboxRow],
                  pending_ids: set[str], *, patch: bool) -> tuple[list[SyncItem], Money]:
    """The items for `p`'s queued refunds, and what of `p` stays applied once they are in.

    Refunds already in NetSuite and those this run sends are subtracted; a refund that
    cannot be built, and every later one of the same payment, is not.
    """
    applied = p.captured
    for r in store.refunds_for_payment(p.id):
        if r.status.counts and r.id not in pending_ids:
            applied = applied - r.amount  # already in NetSuite
    items: list[SyncItem] = []
    sendable: list[tuple[SyncItem, Refund]] = []
    blocked: str | None = None
    seen: set[str] = set()
    for row in rows:
        r = store.get_refund(row.record_id)
        item = SyncItem(row, inv.id, f"customerRefund {r.id}: {r.amount.display()} on {p.id}")
        items.append(item)
        if blocked is not None:
            item.waits_for = blocked
            continue
        if r.id in seen:  # queued twice: the first row's requests stand for both
            item.summary += " (again)"
            continue
        seen.add(r.id)
        item.problem = _missing(inv, ns, "refund_account_id") or _missing(inv, ns, "refund_payment_method_id")
        if item.problem is None and patch and p.netsuite_id is None:
            item.problem = f"payment {p.id} is not in NetSuite yet"
        if item.problem is not None:
            blocked = r.id
            continue
        if not r.status.counts:
            # failed or canceled in Stripe before NetSuite heard of it: nothing to refund there
            item.summary += f" (not sent: {r.status.value} in Stripe)"
            continue
        applied = applied - r.amount
        sendable.append((item, r))
    ref = p.netsuite_id if patch else placeholder(p.id)
    for i, (item, r) in enumerate(sendable):
        assert inv.customer_netsuite_id is not None and inv.netsuite_id is not None and ref is not None
        if i == 0 and patch:
            line: dict[str, Any] = {"doc": _ref(inv.netsuite_id), "apply": applied.minor > 0}
            if applied.minor > 0:
                line["amount"] = _major(applied)
            item.requests.append(("PATCH", f"customerPayment/{ref}", {"apply": {"items": [line]}}))
            item.summary += f"; {p.id} stays applied to {inv.id} for {applied.format()}"
        body = {
            "externalId": r.id,
            "customer": _ref(inv.customer_netsuite_id),
            "account": _ref(ns.refund_account_id),
            "paymentMethod": _ref(ns.refund_payment_method_id),
            "memo": f"Stripe {r.psp_reference} refund of {p.id} (kollrefund {r.id})",
            "apply": {"items": [{"doc": _ref(ref), "apply": True, "amount": _major(r.amount)}]},
        }
        item.requests.append(("PUT", f"customerRefund/eid:{r.id}", body))
    return items, applied


def _missing(inv: Invoice, ns: Any, key: str) -> str | None:
    if inv.netsuite_id is None:
        return f"invoice {inv.id} has no netsuite_id (import it with one, or run `kollrefund pull`)"
    if inv.customer_netsuite_id is None:
        return f"invoice {inv.id} has no customer_netsuite_id (import it with one, or run `kollrefund pull`)"
    if not getattr(ns, key):
        return f"netsuite.{key} is not set (KOLLREFUND_NETSUITE__{key.upper()})"
    return None


def _resolve(value: Any, ids: dict[str, str]) -> Any:
    """`value` with every placeholder replaced by the NetSuite id it stands for."""
    if isinstance(value, dict):
        return {k: _resolve(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, ids) for v in value]
    if isinstance(value, str) and value.startswith("<netsuite id of "):
        return ids[value.removeprefix("<netsuite id of ").removesuffix(">")]
    return value


# -- running -----------------------------------------------------------------------


class _Aborted(Exception):
    """NetSuite refused the credentials earlier in this run: nothing more is sent."""


def sync(ctx: Context, *, dry_run: bool, confirm: Callable[[int], None],
         progress: Progress | None = None) -> SyncReport:
    """Push every change NetSuite has not seen; returns what happened to each record."""
    settings = ctx.settings
    with ctx.open_store(readonly=dry_run) as store:
        rows = store.outbox_rows()
        report = SyncReport(dry_run=dry_run)
        if dry_run:
            unbuildable, jobs = plan(store, settings, rows)
            items = unbuildable + [i for job in jobs for i in job.items]
            order = {r.id: n for n, r in enumerate(rows)}
            report.planned = sorted(items, key=lambda i: order[i.row.id])
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
                _drain(store, settings, client, report, progress, operator=ctx.operator)
        finally:
            lock.release()
        return report


def _drain(
    store: Store, settings: Any, client: Any, report: SyncReport, progress: Progress | None, *, operator: str
) -> None:
    rows = store.outbox_rows()  # again, under the lock: another run may have pushed them
    total = len(rows)
    done = 0
    unbuildable, jobs = plan(store, settings, rows)
    refused: list[ProviderRejected] = []  # the credentials, refused: stop sending
    stop = threading.Event()

    def tick(item: SyncItem) -> None:
        nonlocal done
        done += 1
        if progress:
            progress(item.summary, done, total)

    for item in unbuildable + [i for job in jobs for i in job.items if i.problem is not None]:
        _record_problem(store, item, item.problem or "", failed=True, report=report, operator=operator)
        tick(item)

    def run(job: InvoiceJob) -> tuple[list[tuple[SyncItem, list[str] | Exception, int]], Any]:
        """Send one invoice's records in order, then read the invoice back (in the same job,
        so the read-back of one invoice overlaps the writes of the others)."""
        ids = dict(job.known_ids)
        out: list[tuple[SyncItem, list[str] | Exception, int]] = []
        blocked: str | None = None
        for item in job.items:
            if item.problem is not None:
                continue  # recorded above
            if stop.is_set():
                out.append((item, _Aborted(), 0))
                continue
            if blocked is not None or item.waits_for is not None:
                out.append((item, KollrefundError(f"waits for {blocked or item.waits_for}"), 0))
                continue
            sent = 0
            try:
                got: list[str] = []
                for method, path, body in item.requests:
                    path, body = _resolve(path, ids), _resolve(body, ids)
                    faults.point(f"sync.before_{method.lower()}")
                    sent += 1
                    if method == "PUT":
                        record_type, _, ext = path.partition("/eid:")
                        got.append(client.upsert(record_type, ext, body))
                    else:
                        record_type, _, internal = path.partition("/")
                        client.patch(record_type, internal, body)
                    faults.point(f"sync.after_{method.lower()}")
                if item.row.kind == "payment" and got:
                    ids[item.row.record_id] = got[-1]
                out.append((item, got, sent))
            except Exception as exc:
                if isinstance(exc, ProviderRejected) and exc.http_status == 401:
                    stop.set()
                    refused.append(exc)
                out.append((item, exc, sent))
                blocked = item.row.record_id
        read: Any = None
        wrote = any(isinstance(result, list) and sent for _item, result, sent in out)
        if wrote and job.invoice.netsuite_id and not stop.is_set():
            faults.point("sync.before_read_back")
            try:
                read = client.get("invoice", job.invoice.netsuite_id, expand=False)
            except Exception as exc:
                read = exc
        return out, read

    def on_done(index: int, outcome: Any) -> None:
        if isinstance(outcome, Exception):  # a bug in run(): never lose the record
            raise outcome
        results, read = outcome
        for item, result, sent in results:
            report.requests += sent
            if isinstance(result, _Aborted):
                report.pending[item.row.record_id] = "not sent: NetSuite refused the credentials"
            elif isinstance(result, Exception):
                if isinstance(result, ProviderRejected) and result.http_status == 401:
                    report.pending[item.row.record_id] = result.message  # not this record's fault
                else:
                    failed = isinstance(result, ProviderRejected)
                    message = result.message if isinstance(result, KollrefundError) else type(result).__name__
                    _record_problem(store, item, message, failed=failed, report=report, operator=operator)
            else:
                _record_success(commit, item, result, report)
            tick(item)
        if read is not None:
            report.requests += 1
            _read_back(commit, jobs[index].invoice, read, report)

    commit = _Committer(store, operator=operator)
    try:
        client.run_all([lambda job=job: run(job) for job in jobs], on_done=on_done)
    finally:
        commit.flush()
    report.drift.sort(key=lambda d: d["invoice"])
    if refused:
        raise refused[0]


class _Committer:
    """The local writes of a run, committed in batches (one fsync per batch, not per record).

    Losing a batch to a crash only means its records are sent again next run, which the
    upserts and absolute PATCHes make harmless (test_sync_crash.py). `sync.local_commit`
    fires after each batch.
    """

    def __init__(self, store: Store, *, operator: str, batch: int = 50, seconds: float = 0.25) -> None:
        self.store = store
        self.operator = operator
        self.batch = batch
        self.seconds = seconds
        self._writes: list[Callable[[], None]] = []
        self._since = 0.0

    def add(self, write: Callable[[], None]) -> None:
        if not self._writes:
            self._since = time.monotonic()
        self._writes.append(write)
        if len(self._writes) >= self.batch or time.monotonic() - self._since >= self.seconds:
            self.flush()

    def flush(self) -> None:
        if not self._writes:
            return
        with self.store.transaction():
            for write in self._writes:
                write()
        self._writes.clear()
        faults.point("sync.local_commit")


def _record_success(commit: _Committer, item: SyncItem, ids: Sequence[str], report: SyncReport) -> None:
    table = "payments" if item.row.kind == "payment" else "refunds"
    store = commit.store

    def write() -> None:
        store.set_sync(table, item.row.record_id, state="synced", netsuite_id=ids[-1] if ids else None)
        store.outbox_done(item.row.id)
        store.audit(_audit_entry(item, commit.operator, "synced", netsuite_ref=ids[-1] if ids else None))

    commit.add(write)
    report.synced.append(item.row.record_id)


def _audit_entry(item: SyncItem, operator: str, outcome: str, *, netsuite_ref: str | None = None,
                 error: str | None = None) -> AuditEntry:
    kind = item.row.kind
    return AuditEntry(
        action=f"netsuite.{kind}_{outcome}", operator=operator, subject_id=item.row.record_id,
        invoice_id=item.invoice_id or None, payment_id=item.row.record_id if kind == "payment" else None,
        refund_id=item.row.record_id if kind == "refund" else None, netsuite_ref=netsuite_ref,
        detail={"requests": [f"{method} {path}" for method, path, _ in item.requests],
                **({"error": error} if error else {})},
    )


def _record_problem(store: Store, item: SyncItem, message: str, *, failed: bool, report: SyncReport,
                    operator: str) -> None:
    table = "payments" if item.row.kind == "payment" else "refunds" if item.row.kind == "refund" else None
    with store.transaction():
        if table:
            store.set_sync(table, item.row.record_id, state="failed" if failed else "pending", error=message)
        store.outbox_problem(item.row.id, failed=failed, error=message)
        if failed:  # a record NetSuite (or our own check) refused; pending ones are simply retried
            store.audit(_audit_entry(item, operator, "failed", error=message))
    (report.failed if failed else report.pending)[item.row.record_id] = message


def _read_back(commit: _Committer, inv: Invoice, outcome: Any, report: SyncReport) -> None:
    """Record what NetSuite shows for an invoice just written; a disagreement with the local
    balance (as it was when this run planned) is drift."""
    from kollrefund.netsuite import amount, status_name

    if isinstance(outcome, Exception):
        report.drift.append({"invoice": inv.id, "problem": f"could not read it back: {outcome}"})
        return
    status = status_name(outcome.get("status"))
    remaining = amount(outcome.get("amountRemaining", "0"))
    try:  # in the currency's decimals, as every amount at the edges ("30.00", not "30")
        shown = Money.parse(remaining, inv.currency).format()
    except KollrefundError:
        shown = str(remaining)
    commit.add(lambda: commit.store.set_invoice_netsuite_view(inv.id, status=status, amount_remaining=shown))
    expected = "Paid In Full" if inv.balance.minor == 0 else "Open"
    if remaining != inv.balance.to_decimal() or status != expected:
        report.drift.append({
            "invoice": inv.id, "netsuite_status": status, "netsuite_amount_remaining": shown,
            "local_status": inv.status.value, "local_balance": inv.balance.format(),
        })
