"""Everything the operator sees: Rich tables on a terminal, plain aligned text when
piped or when NO_COLOR is set, and JSON with SPEC's stable keys.

Text that came from a file, Stripe or NetSuite is never read as Rich markup.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from kollrefund.domain import Invoice, Payment, Refund
from kollrefund.store import SyncState
from kollrefund.views import ImportResult, InvoiceView, PaymentView, RefundView

_STATUS_STYLE = {
    "paid": "green",
    "succeeded": "green",
    "synced": "green",
    "partially_paid": "yellow",
    "partially_refunded": "yellow",
    "authorized": "cyan",
    "pending": "yellow",
    "unpaid": "red",
    "refunded": "magenta",
    "failed": "bold red",
    "canceled": "dim",
}


def plain_output(stream: Any = None) -> bool:
    stream = stream or sys.stdout
    return bool(os.environ.get("NO_COLOR")) or not getattr(stream, "isatty", lambda: False)()


def console(*, stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    if plain_output(stream):
        return Console(
            # wide enough that no column is ever cut: piped output is for grep and scripts
            file=stream, no_color=True, highlight=False, emoji=False, width=1000, force_terminal=False, soft_wrap=True
        )
    return Console(file=stream, highlight=False, emoji=False, stderr=stderr)


def _table(*columns: str, title: str | None = None) -> Table:
    plain = plain_output()
    table = Table(
        title=title,
        box=None if plain else box.SIMPLE_HEAD,
        show_edge=not plain,
        pad_edge=False,
        title_justify="left",
        expand=False,
        header_style="bold",
    )
    for col in columns:
        numeric = col in {"Total", "Balance", "Amount", "Captured", "Refunded"}
        # Piped output never wraps (one record, one line, for grep); on a narrow terminal a
        # cell folds onto a second line rather than lose characters to an ellipsis: a
        # truncated PSP reference or amount is worse than a taller table.
        table.add_column(col, justify="right" if numeric else "left", no_wrap=plain, overflow="fold")
    return table


def _status(value: str) -> Text:
    return Text(value, style=_STATUS_STYLE.get(value, ""))


def _cell(value: object) -> Text:
    return Text("" if value is None else str(value))


def _sync_cell(sync: SyncState) -> Text:
    text = Text(sync.netsuite_id or "—")
    text.append(" ")
    text.append_text(_status(sync.sync))
    if sync.error:  # the full detail is in --json and `kollrefund sync`
        short = sync.error if len(sync.error) <= 90 else sync.error[:89] + "…"
        text.append(f" ({short})", style="red")
    return text


# -- JSON (SPEC keys; amounts as decimal strings) --------------------------------------


def sync_json(sync: SyncState) -> dict[str, Any]:
    out: dict[str, Any] = {"id": sync.netsuite_id, "sync": sync.sync}
    if sync.error:
        out["error"] = sync.error
    return out


def invoice_json(inv: Invoice, sync: SyncState | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": inv.id,
        "customer": inv.customer,
        "currency": inv.currency,
        "total": inv.total.format(),
        "balance": inv.balance.format(),
        "status": inv.status.value,
    }
    out["netsuite"] = sync_json(sync) if sync else {"id": inv.netsuite_id}
    return out


def payment_json(p: Payment, sync: SyncState) -> dict[str, Any]:
    return {
        "id": p.id,
        "invoice_id": p.invoice_id,
        "status": p.status.value,
        "amount": p.amount.format(),
        "captured": p.captured.format(),
        "refunded": p.refunded.format(),
        "currency": p.currency,
        "psp": p.psp,
        "psp_reference": p.psp_reference,
        "updated_at": p.updated_at,
        "netsuite": sync_json(sync),
    }


def refund_json(r: Refund, sync: SyncState) -> dict[str, Any]:
    return {
        "id": r.id,
        "payment_id": r.payment_id,
        "amount": r.amount.format(),
        "currency": r.amount.currency,
        "status": r.status.value,
        "reason": r.reason,
        "psp_reference": r.psp_reference,
        "created_at": r.created_at,
        "failure_reason": r.failure_reason,
        "netsuite": sync_json(sync),
    }


def status_json(view: InvoiceView | PaymentView) -> dict[str, Any]:
    if isinstance(view, InvoiceView):
        return {
            "invoice": invoice_json(view.invoice, view.sync),
            "payments": [payment_json(pv.payment, pv.sync) for pv in view.payments],
        }
    return {
        "payment": payment_json(view.payment, view.sync),
        "refunds": [refund_json(rv.refund, rv.sync) for rv in view.refunds],
    }


def print_json(data: Any) -> None:
    from kollrefund import exact_json

    sys.stdout.write(exact_json.dumps(data, indent=2, ensure_ascii=False) + "\n")


# -- tables ------------------------------------------------------------------------


def payments_table(views: Sequence[PaymentView], *, title: str | None = "Payments") -> Table:
    table = _table(
        "Payment",
        "Invoice",
        "PSP",
        "PSP reference",
        "Status",
        "Amount",
        "Captured",
        "Refunded",
        "Updated (UTC)",
        "NetSuite",
        title=title,
    )
    for pv in views:
        p = pv.payment
        table.add_row(
            _cell(p.id),
            _cell(p.invoice_id),
            _cell(p.psp.capitalize()),
            _cell(p.psp_reference or "—"),
            _status(p.status.value),
            _cell(p.amount.display()),
            _cell(p.captured.format()),
            _cell(p.refunded.format()),
            _cell(p.updated_at),
            _sync_cell(pv.sync),
        )
    return table


def refunds_table(views: Sequence[RefundView]) -> Table:
    table = _table(
        "Refund", "Amount", "Status", "Reason", "Stripe refund", "Created (UTC)", "NetSuite", title="Refunds"
    )
    for rv in views:
        r = rv.refund
        status = _status(r.status.value)
        if r.failure_reason:
            status.append(f" ({r.failure_reason})")
        table.add_row(
            _cell(r.id),
            _cell(r.amount.display()),
            status,
            _cell(r.reason or "—"),
            _cell(r.psp_reference or "—"),
            _cell(r.created_at),
            _sync_cell(rv.sync),
        )
    return table


def invoice_summary(inv: Invoice, sync: SyncState | None) -> Table:
    table = _table("Invoice", "Customer", "Total", "Balance", "Status", "NetSuite", title="Payment breakdown")
    table.add_row(
        _cell(inv.id),
        _cell(inv.customer),
        _cell(inv.total.display()),
        _cell(inv.balance.display()),
        _status(inv.status.value),
        _sync_cell(sync) if sync else _cell(inv.netsuite_id or "—"),
    )
    return table


def payment_cards(views: Sequence[PaymentView], *, title: str) -> Table:
    """The payments table turned on its side, for a terminal too narrow for its rows: one
    block of field/value lines per payment, rather than ten columns folded into slivers."""
    outer = Table.grid(padding=(0, 0, 1, 0))
    outer.add_row(Text(title, style="italic"))
    for pv in views:
        p = pv.payment
        card = Table.grid(padding=(0, 2))
        card.add_column(style="bold", no_wrap=True)
        card.add_column(overflow="fold")
        for label, value in (
            ("Payment", _cell(p.id)), ("Invoice", _cell(p.invoice_id)), ("PSP", _cell(p.psp.capitalize())),
            ("PSP reference", _cell(p.psp_reference or "—")), ("Status", _status(p.status.value)),
            ("Amount", _cell(p.amount.display())), ("Captured", _cell(p.captured.format())),
            ("Refunded", _cell(p.refunded.format())), ("Updated (UTC)", _cell(p.updated_at)),
            ("NetSuite", _sync_cell(pv.sync)),
        ):
            card.add_row(label, value)
        outer.add_row(card)
    return outer


def payments_output(out: Console, views: Sequence[PaymentView], *, title: str) -> Table:
    table = payments_table(views, title=title)
    # how wide the rows want to be, unclamped (console.measure stops at the terminal's width)
    wanted = Measurement.get(out, out.options.update_width(10_000), table).maximum
    if plain_output() or wanted <= out.width:
        return table
    return payment_cards(views, title=title)


def print_status(view: InvoiceView | PaymentView) -> None:
    out = console()
    if isinstance(view, InvoiceView):
        out.print(invoice_summary(view.invoice, view.sync))
        if view.payments:
            out.print(payments_output(out, view.payments, title="Payments applied"))
        else:
            out.print(Text("No payments applied."))
    else:
        out.print(payments_output(out, [view], title="Payment"))
        if view.refunds:
            out.print(refunds_table(view.refunds))
        else:
            out.print(Text("No refunds."))


def print_invoices(invoices: Iterable[Invoice]) -> None:
    table = _table("Invoice", "Customer", "Total", "Balance", "Status", "NetSuite", "Due", title="Invoices")
    n = 0
    for inv in invoices:
        n += 1
        table.add_row(
            _cell(inv.id),
            _cell(inv.customer),
            _cell(inv.total.display()),
            _cell(inv.balance.format()),
            _status(inv.status.value),
            _cell(inv.netsuite_id or "—"),
            _cell(inv.due_on or "—"),
        )
    console().print(table if n else Text("No invoices."))


def print_payments(views: Sequence[PaymentView]) -> None:
    out = console()
    out.print(payments_output(out, views, title="Payments") if views else Text("No payments."))


def import_json(r: ImportResult) -> dict[str, Any]:
    return {
        "kind": r.kind,
        "file": r.file,
        "added": r.added,
        "updated": r.updated,
        "unchanged": r.unchanged,
        "dry_run": r.dry_run,
        "changes": r.changes,
    }


def print_import(r: ImportResult) -> None:
    out = console()
    verb = "Would import" if r.dry_run else "Imported"
    out.print(Text(f"{verb} {r.added} {r.kind}, updated {r.updated}, {r.unchanged} unchanged, from {r.file}."))
    for line in r.changes[:20]:
        out.print(Text(f"  {line}"))
    if len(r.changes) > 20:
        out.print(Text(f"  … and {len(r.changes) - 20} more."))


def error_line(message: str) -> None:
    out = console(stderr=True)
    out.print(Text("error: ", style="bold red") + Text(message), soft_wrap=True)


def warning_line(message: str) -> None:
    out = console(stderr=True)
    out.print(Text("warning: ", style="yellow") + Text(message), soft_wrap=True)


# -- money movements ---------------------------------------------------------------


def plan_json(plan: Any) -> dict[str, Any]:
    return {
        "action": plan.action, "payment_id": plan.payment_id, "invoice_id": plan.invoice_id,
        "amount": plan.amount.format(), "currency": plan.amount.currency,
        "invoice_balance_before": plan.balance_before.format(), "invoice_balance_after": plan.balance_after.format(),
        "payment_status_before": plan.status_before, "payment_status_after": plan.status_after,
    }


def movement_json(result: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"dry_run": result.dry_run, "plan": plan_json(result.plan), "recovered": result.recovered,
                           "rerun": result.rerun}
    if result.invoice is not None:
        out["invoice"] = invoice_json(result.invoice.invoice, result.invoice.sync)
    if result.payment is not None:
        out["payment"] = payment_json(result.payment.payment, result.payment.sync)
        out["refunds"] = [refund_json(rv.refund, rv.sync) for rv in result.payment.refunds]
    if result.refund_id is not None:
        out["refund_id"] = result.refund_id
    return out


def print_plan(plan: Any) -> None:
    console(stderr=True).print(Text(plan.describe()))


def print_movement(result: Any) -> None:
    out = console()
    for note in result.recovered:
        out.print(Text(f"Recovered: {note}"))
    if result.dry_run:
        out.print(Text(f"Dry run, nothing changed. Would: {result.plan.describe()}"))
        return
    done = {"refund": "Refunded", "capture": "Captured", "void": "Voided", "charge": "Charged",
            "authorize": "Authorized"}[result.plan.action]
    pid = result.payment.payment.id if result.payment else result.plan.payment_id
    extra = f" as {result.refund_id}" if result.refund_id else ""
    if result.rerun:
        out.print(Text(f"{done} {result.plan.amount.display()} on {pid}{extra} by finishing the interrupted earlier "
                       "run of this command; nothing more was moved. Run it again to move more."))
    else:
        out.print(Text(f"{done} {result.plan.amount.display()} on {pid}{extra}."))
    if result.payment is not None:
        out.print(payments_output(out, [result.payment], title="Payment"))
        if result.payment.refunds:
            out.print(refunds_table(result.payment.refunds))
    if result.invoice is not None:
        out.print(invoice_summary(result.invoice.invoice, result.invoice.sync))


# -- NetSuite sync ------------------------------------------------------------------


class sync_progress:
    """A Rich progress bar on a terminal; nothing otherwise (print_sync prints one summary line)."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled and not plain_output(sys.stderr)
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> Any:
        if not self.enabled:
            return None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(TextColumn("NetSuite"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                  TextColumn("{task.description}"), console=console(stderr=True), transient=True)
        self._progress.__enter__()

        def update(summary: str, done: int, total: int) -> None:
            if self._task is None:
                self._task = self._progress.add_task("", total=total)
            self._progress.update(self._task, completed=done, total=total, description=summary[:60])

        return update

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)


def sync_report_json(report: Any) -> dict[str, Any]:
    if report.dry_run:
        return {"dry_run": True, "would_push": [
            {"record": i.row.record_id, "kind": i.row.kind, "what": i.summary, "problem": i.problem,
             "requests": [{"method": m, "path": p, "body": b} for m, p, b in i.requests]}
            for i in report.planned]}
    return {"dry_run": False, "synced": report.synced, "failed": report.failed, "pending": report.pending,
            "drift": report.drift, "requests": report.requests}


def print_sync(report: Any) -> None:
    out = console()
    if report.dry_run:
        if not report.planned:
            out.print(Text("Nothing to push to NetSuite."))
        for item in report.planned:
            line = Text(f"Would push {item.summary}")
            if item.problem:
                line.append(f" — cannot: {item.problem}", style="red")
            out.print(line)
            for method, path, _body in item.requests:
                out.print(Text(f"    {method} /services/rest/record/v1/{path}"))
        return
    out.print(Text(
        f"NetSuite sync: {len(report.synced)} synced, {len(report.pending)} still pending, "
        f"{len(report.failed)} failed ({report.requests} requests)."
    ))
    for record, message in {**report.failed, **report.pending}.items():
        out.print(Text(f"  {record}: {message}", style="red"))
    for d in report.drift:
        if "problem" in d:
            out.print(Text(f"  drift: {d['invoice']}: {d['problem']}", style="yellow"))
        else:
            out.print(Text(
                f"  drift: {d['invoice']} is {d['netsuite_status']} with {d['netsuite_amount_remaining']} remaining "
                f"in NetSuite, {d['local_status']} with {d['local_balance']} here", style="yellow"))


# -- the audit trail ---------------------------------------------------------------------


def audit_json(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out["detail"] = json.loads(row["detail"]) if row.get("detail") else None
    return out


def print_audit(rows: Sequence[dict[str, Any]]) -> None:
    table = _table("#", "When (UTC)", "Who", "What", "Record", "Amount", "Balance", "Why", "Stripe", "NetSuite",
                   title="Audit trail")
    for r in rows:
        balance = ""
        if r["balance_before"] is not None or r["balance_after"] is not None:
            balance = f"{r['balance_before'] or '—'} → {r['balance_after'] or '—'}"
        amount = f"{r['amount']} {(r['currency'] or '').upper()}".strip() if r["amount"] else ""
        table.add_row(_cell(r["id"]), _cell(r["at"]), _cell(r["operator"]), _cell(r["action"]),
                      _cell(r["subject_id"] or ""), _cell(amount), _cell(balance), _cell(r["reason"] or ""),
                      _cell(r["stripe_ref"] or ""), _cell(r["netsuite_ref"] or ""))
    console().print(table if rows else Text("No audit entries."))


# -- reconcile, pull, expiring authorizations ----------------------------------------------


def reconcile_json(report: Any) -> dict[str, Any]:
    return {
        "fix": report.fix, "dry_run": report.dry_run, "checked_payments": report.checked_payments,
        "checked_invoices": report.checked_invoices, "fixes": report.fixes,
        "drift": [{"record": d.record, "what": d.what, "local": d.local, "stripe": d.stripe or None,
                   "netsuite": d.netsuite or None, "fixed": d.fixed} for d in report.drift],
        "unresolved": len(report.unresolved),
    }


def print_reconcile(report: Any) -> None:
    out = console()
    out.print(Text(f"Checked {report.checked_payments} payment(s) with Stripe and "
                   f"{report.checked_invoices} invoice(s) with NetSuite."))
    if report.drift:
        table = _table("Record", "What", "Local", "Stripe", "NetSuite", "Fixed", title="Drift")
        for d in report.drift:
            table.add_row(_cell(d.record), _cell(d.what), _cell(d.local), _cell(d.stripe or "—"),
                          _cell(d.netsuite or "—"), _status("synced") if d.fixed else _status("pending"))
        out.print(table)
    for line in report.fixes:
        out.print(Text(f"  fixed: {line}"))
    if not report.drift:
        out.print(Text("No drift: the cache, Stripe and NetSuite agree."))
    elif report.unresolved and not report.fix:
        out.print(Text("Run `kollrefund reconcile --fix` to record Stripe's figures; NetSuite drift needs a person."))


def pull_json(report: Any) -> dict[str, Any]:
    return {"dry_run": report.dry_run, "added": report.added, "updated": report.updated,
            "unchanged": report.unchanged, "conflicts": report.conflicts, "notes": report.notes}


def print_pull(report: Any) -> None:
    out = console()
    verb = "Would add" if report.dry_run else "Added"
    out.print(Text(f"{verb} {len(report.added)} invoice(s), updated {len(report.updated)}, "
                   f"{report.unchanged} unchanged, {len(report.conflicts)} conflict(s)."))
    for line in report.conflicts:
        out.print(Text(f"  conflict: {line}", style="yellow"))
    for line in report.notes:
        out.print(Text(f"  note: {line}"))


def expiring_json(e: Any) -> dict[str, Any]:
    out = payment_json(e.payment, SyncState(e.payment.netsuite_id, "pending"))
    out.pop("netsuite")
    out.update({"capture_before": e.deadline, "deadline_source": e.source, "days_left": str(e.days_left)})
    return out


def print_expiring(found: Sequence[Any], days: int) -> None:
    if not found:
        console().print(Text(f"No authorization lapses within {days} day(s)."))
        return
    table = _table("Payment", "Invoice", "PSP reference", "Amount", "Capture before (UTC)", "Days left", "From",
                   title="Authorizations about to lapse: capture or void them")
    for e in found:
        p = e.payment
        table.add_row(_cell(p.id), _cell(p.invoice_id), _cell(p.psp_reference or "—"), _cell(p.amount.display()),
                      _cell(e.deadline), _cell(e.days_left), _cell(e.source))
    console().print(table)
