"""The command line: options, confirmations and the one error boundary.

No SQL and no SDK here: each command builds a Context, calls one action, and
hands the result to ``render``. Heavy modules (stripe, requests) are imported
inside the commands that need them, so read-only commands start fast.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from kollrefund import render
from kollrefund.errors import ExitCode, KollrefundError, RefusedError, UsageError

app = typer.Typer(
    name="kollrefund",
    help="Refund and capture Stripe payments exactly once, and keep NetSuite in step.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,  # never a traceback (with locals: secrets) unless --debug
    add_completion=True,
    rich_markup_mode=None,
)


class _Globals:
    config: Path | None = None
    cache: Path | None = None
    operator: str | None = None
    debug: bool = False
    secrets: list[str] = []  # noqa: RUF012 - scrubbed from every message


G = _Globals()

ConfigOpt = Annotated[Path | None, typer.Option("--config", help="TOML config file.", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON (stable keys) instead of tables.")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Show what would change and change nothing.")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation (scripts, cron).")]


@app.callback()
def _main(
    config: ConfigOpt = None,
    cache: Annotated[Path | None, typer.Option("--cache", help="The SQLite cache file (cache.path).")] = None,
    operator: Annotated[str | None, typer.Option("--operator", help="Who is acting, for the audit trail.")] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show a traceback on unexpected errors.")] = False,
) -> None:
    G.config, G.cache, G.operator, G.debug = config, cache, operator, debug


def _context() -> Any:
    from kollrefund.actions import Context
    from kollrefund.settings import load_settings, secret_values

    overrides: dict[str, Any] = {}
    if G.cache is not None:
        overrides["cache.path"] = G.cache
    if G.operator is not None:
        overrides["operator.name"] = G.operator
    loaded = load_settings(G.config, overrides=overrides)
    G.secrets = secret_values(loaded.settings)
    for warning in loaded.warnings:
        render.warning_line(warning)
    settings = loaded.settings
    return Context(cache_path=Path(settings.cache.path), operator=settings.operator_name(), settings=settings)


def confirm(question: str, *, yes: bool) -> None:
    """Ask on a terminal; refuse (exit 4) where nobody can answer and --yes was not given."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise RefusedError(
            "Nothing was done: this needs confirmation and no terminal can answer.", hint="Run again with --yes."
        )
    if not typer.confirm(question, default=False):
        raise RefusedError("Nothing was done: not confirmed.")


# -- read-only commands -------------------------------------------------------------


@app.command("status")
def status_cmd(
    record_id: Annotated[str, typer.Argument(help="An invoice (INV-9) or payment (PAY-123) id.")],
    as_json: JsonOpt = False,
) -> None:
    """The payment breakdown of an invoice, or one payment with its refunds."""
    from kollrefund import actions

    view = actions.status(_context(), record_id)
    if as_json:
        render.print_json(render.status_json(view))
    else:
        render.print_status(view)


@app.command("invoices")
def invoices_cmd(
    status: Annotated[str | None, typer.Option("--status", help="unpaid, partially_paid or paid.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List invoices from the cache."""
    from kollrefund import actions

    invoices = actions.list_invoices(_context(), status=status)
    if as_json:
        render.print_json({"invoices": [render.invoice_json(i) for i in invoices]})
    else:
        render.print_invoices(invoices)


@app.command("payments")
def payments_cmd(
    status: Annotated[
        str | None,
        typer.Option("--status", help="pending, authorized, paid, partially_refunded, refunded, canceled or failed."),
    ] = None,
    expiring: Annotated[bool, typer.Option("--expiring", help="Only authorizations about to lapse.")] = False,
    days: Annotated[int, typer.Option("--days", help="With --expiring: lapsing within this many days.")] = 6,
    as_json: JsonOpt = False,
) -> None:
    """List payments from the cache."""
    from kollrefund import actions

    if expiring:
        from kollrefund import pull

        if status is not None:
            raise UsageError("--expiring lists authorized payments; it takes no --status.")
        found = pull.expiring(_context(), days=days)
        if as_json:
            render.print_json({"payments": [render.expiring_json(e) for e in found]})
        else:
            render.print_expiring(found, days)
        return
    views = actions.list_payments(_context(), status=status)
    if as_json:
        render.print_json({"payments": [render.payment_json(v.payment, v.sync) for v in views]})
    else:
        render.print_payments(views)


# -- writing commands ---------------------------------------------------------------


@app.command("import")
def import_cmd(
    file: Annotated[Path, typer.Argument(help="A CSV or JSON file of invoices or payments.")],
    kind: Annotated[
        str | None, typer.Option("--kind", help="invoices or payments (default: from the columns).")
    ] = None,
    update: Annotated[bool, typer.Option("--update", help="Apply changes to invoices already in the cache.")] = False,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Load invoices or payments into the cache; one bad row and nothing is written."""
    from kollrefund import actions

    ctx = _context()
    verifier = None
    if ctx.settings.stripe.api_key is not None:

        def verifier(rows: Any, errors: Any) -> Any:  # only payments files are checked against Stripe
            from kollrefund import movements, stripe_import

            # reading Stripe moves no money, so a live key is fine here
            return stripe_import.verifier(movements.gateway(ctx, live=True))(rows, errors)

    result = actions.import_file(ctx, file, kind=kind, dry_run=dry_run, update=update, verifier=verifier)
    if as_json:
        render.print_json(render.import_json(result))
    else:
        render.print_import(result)


LiveOpt = Annotated[bool, typer.Option("--live", help="Allow a live Stripe key (sk_live_/rk_live_).")]
NoteOpt = Annotated[str | None, typer.Option("--note", help="Why, in your words, for the audit trail.")]
AmountOpt = Annotated[str | None, typer.Option("--amount", help="A decimal amount such as 20.00 (default: all).")]


def _confirmer(yes: bool, as_json: bool) -> Any:
    def ask(plan: Any) -> None:
        if not as_json or not yes:
            render.print_plan(plan)
        confirm("Go ahead?", yes=yes)

    return ask


def _show_movement(result: Any, as_json: bool) -> None:
    if as_json:
        render.print_json(render.movement_json(result))
    else:
        render.print_movement(result)


@app.command("refund")
def refund_cmd(
    payment_id: Annotated[str, typer.Argument(help="The payment to refund, e.g. PAY-123.")],
    amount: AmountOpt = None,
    reason: Annotated[str | None, typer.Option(
        "--reason", help="Stripe's reason: duplicate, fraudulent or requested_by_customer.")] = None,
    note: NoteOpt = None,
    yes: YesOpt = False,
    dry_run: DryRunOpt = False,
    live: LiveOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Refund through Stripe and restore the invoice balance; without --amount, all that remains."""
    from kollrefund import movements

    result = movements.refund(_context(), payment_id, amount=amount, reason=reason, dry_run=dry_run, live=live,
                              confirm=_confirmer(yes, as_json), note=note)
    _show_movement(result, as_json)


@app.command("capture")
def capture_cmd(
    payment_id: Annotated[str, typer.Argument(help="An authorized payment, e.g. PAY-123.")],
    amount: AmountOpt = None,
    note: NoteOpt = None,
    yes: YesOpt = False,
    dry_run: DryRunOpt = False,
    live: LiveOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Capture an authorized payment; without --amount, all of it (the rest is released)."""
    from kollrefund import movements

    result = movements.capture(_context(), payment_id, amount=amount, dry_run=dry_run, live=live,
                               confirm=_confirmer(yes, as_json), note=note)
    _show_movement(result, as_json)


@app.command("void")
def void_cmd(
    payment_id: Annotated[str, typer.Argument(help="An authorized payment, e.g. PAY-123.")],
    note: NoteOpt = None,
    yes: YesOpt = False,
    dry_run: DryRunOpt = False,
    live: LiveOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Cancel an authorization."""
    from kollrefund import movements

    result = movements.void(_context(), payment_id, dry_run=dry_run, live=live, confirm=_confirmer(yes, as_json),
                            note=note)
    _show_movement(result, as_json)


@app.command("collect")
def collect_cmd(
    invoice_id: Annotated[str, typer.Argument(help="The invoice to charge, e.g. INV-9.")],
    payment_method: Annotated[str, typer.Option("--payment-method", help="A saved card: pm_…")],
    amount: AmountOpt = None,
    manual_capture: Annotated[bool, typer.Option("--manual-capture", help="Authorize only; capture later.")] = False,
    note: NoteOpt = None,
    yes: YesOpt = False,
    dry_run: DryRunOpt = False,
    live: LiveOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Charge a saved card through Stripe and record the payment on the invoice."""
    from kollrefund import movements

    result = movements.collect(_context(), invoice_id, payment_method=payment_method, amount=amount,
                               manual_capture=manual_capture, dry_run=dry_run, live=live,
                               confirm=_confirmer(yes, as_json), note=note)
    _show_movement(result, as_json)


@app.command("resume")
def resume_cmd(
    live: LiveOpt = False,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Finish any money movement a crash left half done."""
    from kollrefund import movements

    ctx = _context()
    if dry_run:
        pending = movements.describe_intents(ctx)
        if as_json:
            render.print_json({"dry_run": True, "open": pending})
        else:
            for item in pending:
                render.console().print(f"Open {item['kind']} on {item['payment_id']} since {item['since']}")
            if not pending:
                render.console().print("Nothing to resume.")
        return
    notes = movements.resume(ctx, live=live)
    if as_json:
        render.print_json({"dry_run": False, "recovered": notes})
    else:
        for line in notes or ["Nothing to resume."]:
            render.console().print(line, markup=False)


@app.command("sync")
def sync_cmd(
    yes: YesOpt = False,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Push every change NetSuite has not seen; safe from cron, twice at once, or after a crash."""
    from kollrefund import sync

    def ask(count: int) -> None:
        if not yes and not as_json:
            render.console(stderr=True).print(f"{count} record(s) to push to NetSuite.", markup=False)
        confirm("Push them now?", yes=yes)

    with render.sync_progress(enabled=not as_json and not dry_run) as progress:
        report = sync.sync(_context(), dry_run=dry_run, confirm=ask, progress=progress)
    if as_json:
        render.print_json(render.sync_report_json(report))
    else:
        render.print_sync(report)
    if not dry_run and not report.complete:
        raise typer.Exit(ExitCode.SYNC_INCOMPLETE)


@app.command("log")
def log_cmd(
    record_id: Annotated[str | None, typer.Argument(help="Only entries about this invoice, payment or refund.")] = None,
    since: Annotated[str | None, typer.Option("--since", help="From this date (2026-11-01) or UTC time.")] = None,
    export: Annotated[Path | None, typer.Option("--export", help="Write the entries to FILE.jsonl for an auditor.")]
    = None,
    as_json: JsonOpt = False,
) -> None:
    """The audit trail: who did what, when, why, with Stripe and NetSuite references."""
    import json

    from kollrefund import actions

    rows = actions.audit_log(_context(), subject=record_id, since=since)
    if export is not None:
        try:
            with export.open("x", encoding="utf-8") as fh:
                for row in rows:
                    fh.write(json.dumps(render.audit_json(row), ensure_ascii=False, sort_keys=True) + "\n")
        except FileExistsError:
            raise UsageError(f"{export} already exists; choose a new file name.") from None
        except OSError as exc:
            raise UsageError(f"Cannot write {export}: {exc.strerror}.") from None
        render.console(stderr=True).print(f"Wrote {len(rows)} audit entries to {export}.", markup=False)
        return
    if as_json:
        render.print_json({"entries": [render.audit_json(r) for r in rows]})
    else:
        render.print_audit(rows)


@app.command("demo")
def demo_cmd() -> None:
    """Run the whole story (pay, sync, refund, sync) against a local Stripe and NetSuite on loopback."""
    from kollrefund import demo

    raise typer.Exit(demo.run_demo())


@app.command("sandbox")
def sandbox_cmd() -> None:
    """Start the local Stripe and NetSuite and print the environment to point kollrefund at them."""
    import threading

    from kollrefund import demo

    def wait_for_ctrl_c() -> None:
        # Ctrl-C (or a TERM from a supervisor) is how the operator says "stop them"; set the
        # handlers explicitly, since a shell starting us in the background ignores SIGINT.
        import signal

        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        while not stop.wait(0.5):
            pass

    demo.run_sandbox(wait_for_ctrl_c)
    render.console(stderr=True).print("Stopped the local Stripe and NetSuite.", markup=False)


@app.command("reconcile")
def reconcile_cmd(
    since: Annotated[
        str | None,
        typer.Option("--since", help="Payments updated since this date (default: since the last reconcile)."),
    ] = None,
    fix: Annotated[bool, typer.Option("--fix", help="Record Stripe's truth locally (asks first).")] = False,
    yes: YesOpt = False,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Compare the cache with Stripe and NetSuite, amount by amount; exit 8 while drift remains."""
    from kollrefund import reconcile

    def ask(count: int) -> None:
        if not as_json:
            render.console(stderr=True).print(
                f"Record Stripe's figures for {count} payment(s) in the cache (and queue them for NetSuite)?",
                markup=False,
            )
        confirm("Fix them now?", yes=yes)

    with render.sync_progress(enabled=not as_json) as progress:
        report = reconcile.reconcile(
            _context(), since=since, fix=fix, dry_run=dry_run, confirm=ask, progress=progress
        )
    if as_json:
        render.print_json(render.reconcile_json(report))
    else:
        render.print_reconcile(report)
    if report.unresolved:
        raise typer.Exit(ExitCode.DRIFT)


@app.command("pull")
def pull_cmd(
    since: Annotated[
        str | None, typer.Option("--since", help="Only invoices NetSuite changed since this date.")
    ] = None,
    yes: YesOpt = False,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Load open invoices from NetSuite (SuiteQL) into the cache."""
    from kollrefund import pull

    def ask(count: int) -> None:
        if not as_json:
            render.console(stderr=True).print(f"Write {count} invoice(s) from NetSuite into the cache?", markup=False)
        confirm("Go ahead?", yes=yes)

    report = pull.pull(_context(), since=since, dry_run=dry_run, confirm=ask)
    if as_json:
        render.print_json(render.pull_json(report))
    else:
        render.print_pull(report)


# -- the error boundary ---------------------------------------------------------------


def _scrub(message: str) -> str:
    for secret in G.secrets:
        if secret:
            message = message.replace(secret, "[secret]")
    return message


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit status; every failure becomes one line on stderr."""
    args = sys.argv[1:] if argv is None else argv
    G.debug = "--debug" in args or bool(os.environ.get("KOLLREFUND_DEBUG"))
    try:
        rv = app(args=args, prog_name="kollrefund", standalone_mode=False)
        return int(rv) if isinstance(rv, int) else 0
    except typer.Exit as exc:
        return int(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        render.error_line("Interrupted; anything half done is finished by `kollrefund resume`.")
        return ExitCode.INTERRUPTED
    except typer.TyperException as exc:  # click's usage errors, as vendored by typer
        if type(exc).__name__ == "NoArgsIsHelpError":
            sys.stdout.write(exc.format_message() + "\n")
            return ExitCode.USAGE
        render.error_line(_scrub(exc.format_message()) + " (see --help)")
        return ExitCode.USAGE
    except KollrefundError as exc:
        render.error_line(_scrub(str(exc)))
        return int(exc.exit_code)
    except Exception as exc:
        if G.debug:
            traceback.print_exc()
        render.error_line(
            _scrub(
                f"kollrefund hit an unexpected error ({type(exc).__name__}); this is a bug. "
                "Run again with --debug for the traceback and report it."
            )
        )
        return ExitCode.BUG


def main() -> NoReturn:
    sys.exit(run())
