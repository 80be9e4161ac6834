"""Moving money through Stripe exactly once: collect, capture, void, refund, resume.

Every movement follows the same three steps (ARCHITECTURE: Moving money exactly once):

1. one transaction records the intent -- local id, amount, an idempotency key
   stored before the call -- with its audit row;
2. Stripe is called with that key and our metadata (``kollrefund_refund_id``,
   ``kollrefund_payment_id``, ``kollrefund_invoice_id``);
3. one transaction records Stripe's answer, updates payment and invoice, queues
   the NetSuite sync and appends to the audit trail.

A crash between 1 and 3 leaves an open intent. The next money command on that
payment (or ``kollrefund resume``) finishes it: first by asking Stripe (the
refunds of the PaymentIntent, or PaymentIntents by metadata -- this works after
Stripe's 24-hour key window too), and only when Stripe has nothing, by sending
again with the same key. When the command that finished it is the same
movement again (same kind and amount, or "all" with nothing left), it stops
there: "safe to run the same command again" means the rerun completes the first
attempt, it does not repeat it. A per-payment file lock keeps two operators from moving
money on one payment at once; the database's write lock keeps their
transactions apart.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from filelock import FileLock, Timeout

from kollrefund import domain as d
from kollrefund import faults, stripe_truth
from kollrefund.actions import Context, invoice_view, payment_view
from kollrefund.domain import Payment, PaymentStatus, RefundStatus, from_iso
from kollrefund.errors import ConfigError, ProviderRejected, RefusedError, UsageError
from kollrefund.money import Money, check_stripe_amount, parse_positive
from kollrefund.store import AuditEntry, Intent, Store, now
from kollrefund.stripe_gateway import StripeGateway, StripePayment, StripeRefund, is_live_key
from kollrefund.views import InvoiceView, PaymentView

LOCK_WAIT_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class Plan:
    """What a movement will do, shown before it happens."""

    action: str
    payment_id: str
    invoice_id: str
    amount: Money
    balance_before: Money
    balance_after: Money
    status_before: str
    status_after: str
    detail: str = ""

    def describe(self) -> str:
        return (
            f"{self.action.capitalize()} {self.amount.display()} on {self.payment_id}"
            f"{f' ({self.detail})' if self.detail else ''}: payment {self.status_before} → {self.status_after}, "
            f"invoice {self.invoice_id} balance {self.balance_before.format()} → {self.balance_after.format()}."
        )


@dataclass
class MovementResult:
    plan: Plan
    dry_run: bool
    invoice: InvoiceView | None = None
    payment: PaymentView | None = None
    refund_id: str | None = None
    recovered: list[str] = field(default_factory=list)
    rerun: bool = False  # this run only finished the same movement that an earlier run left half done


Confirm = Callable[[Plan], None]


# -- set-up ---------------------------------------------------------------------------


def gateway(ctx: Context, *, live: bool) -> StripeGateway:
    """A Stripe gateway from configuration; refuses a live key without ``--live``."""
    cfg = ctx.settings.stripe
    if cfg.api_key is None:
        raise ConfigError(
            "stripe.api_key is not set.", hint="Set it in kollrefund.toml or KOLLREFUND_STRIPE__API_KEY."
        )
    key = cfg.api_key.get_secret_value()
    if not key.startswith(("sk_", "rk_")):
        raise ConfigError("stripe.api_key does not look like a Stripe secret or restricted key (sk_… or rk_…).")
    if is_live_key(key) and not live:
        raise RefusedError(
            "stripe.api_key is a live key; nothing was done.", hint="Run again with --live to move real money."
        )
    return StripeGateway(
        api_key=key,
        api_base=cfg.api_base,
        timeout_seconds=float(cfg.timeout_seconds),
        max_network_retries=int(cfg.max_network_retries),
    )


@contextmanager
def money_lock(ctx: Context, subject_id: str) -> Iterator[None]:
    """One money movement per payment (or invoice, for collect) at a time, across processes."""
    lock_dir = ctx.cache_path.parent / f"{ctx.cache_path.name}.locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_dir / f"{subject_id}.lock"))
    try:
        lock.acquire(timeout=LOCK_WAIT_SECONDS)
    except Timeout:
        raise RefusedError(
            f"Another kollrefund is moving money on {subject_id}; nothing was done.",
            hint="Wait for it to finish, then run again.",
        ) from None
    try:
        yield
    finally:
        lock.release()


def _key(kind: str, subject: str) -> str:
    # Unique per intent (a rebuilt cache reusing RF-7 must never replay the old RF-7),
    # and stored before the call, so every resend of this intent uses the same key.
    return f"kollrefund-{kind}-{subject}-{secrets.token_hex(8)}"


def _settled(store: Store, payment: Payment) -> tuple[d.Invoice, d.Invoice]:
    invoice = store.get_invoice(payment.invoice_id)
    others = [q for q in store.payments_for_invoice(invoice.id) if q.id != payment.id]
    return invoice, d.settle_invoice(invoice, [*others, payment])


def _save(store: Store, payment: Payment) -> tuple[d.Invoice, d.Invoice]:
    before, after = _settled(store, payment)
    store.save_payment(payment)
    store.save_invoice(after)
    return before, after


def _result(store: Store, plan: Plan, *, refund_id: str | None = None, recovered: list[str]) -> MovementResult:
    p = store.get_payment(plan.payment_id)
    return MovementResult(
        plan=plan, dry_run=False, invoice=invoice_view(store, store.get_invoice(p.invoice_id)),
        payment=payment_view(store, p), refund_id=refund_id, recovered=recovered,
    )


# -- the stale-cache guard ------------------------------------------------------------


def _guard(ctx: Context, store: Store, gw: StripeGateway, p: Payment, *, dry_run: bool) -> StripePayment:
    """Read Stripe's truth before moving money; refuse (exit 4) when the cache was stale."""
    if p.psp != "stripe" or not p.psp_reference:
        raise RefusedError(f"Payment {p.id} has no Stripe PaymentIntent; kollrefund can only move Stripe payments.")
    sp = gw.payment(p.psp_reference)
    if sp.amount.currency != p.currency:
        raise RefusedError(f"Stripe has {p.psp_reference} in {sp.amount.currency.upper()}, the cache in "
                           f"{p.currency.upper()}; nothing was done.")
    if not stripe_truth.differs(p, sp):
        return sp
    summary = (f"Stripe shows {sp.captured.display()} captured and {sp.refunded.display()} refunded on {p.id} "
               f"({p.psp_reference}); the cache had {p.captured.format()} and {p.refunded.format()}")
    if dry_run:
        raise RefusedError(f"{summary}; nothing was done.", hint="Run without --dry-run to record Stripe's figures.")
    with store.transaction():
        stripe_truth.absorb(store, operator=ctx.operator, payment=p, sp=sp, why="stale cache found before a movement")
    raise RefusedError(
        f"{summary}. The cache now matches Stripe and nothing was moved.",
        hint=f"Check `kollrefund status {p.id}`, then run again if money is still to move.",
    )


# -- resume ---------------------------------------------------------------------------


def resume_payment(ctx: Context, store: Store, gw: StripeGateway, payment_id: str) -> list[str]:
    """Finish every open intent on one payment (caller holds its lock)."""
    return [text for _, text in _resume(ctx, store, gw, payment_id)]


def _resume(ctx: Context, store: Store, gw: StripeGateway, payment_id: str) -> list[tuple[Intent, str]]:
    return [(intent, _finish(ctx, store, gw, intent)) for intent in store.open_intents(payment_id)]


def _rerun_of(store: Store, finished: list[tuple[Intent, str]], kind: str, wanted: Money | None, remaining: Money,
              params: dict[str, Any] | None = None) -> Intent | None:
    """The interrupted movement that this command repeats, if it just finished one.

    "It is safe to run the same command again" must hold: a rerun after a lost
    answer or a crash finishes the first attempt and moves no more money. It
    repeats it when it asks for the same amount (or for "all", and nothing is
    left to move after the first attempt finished), and the first attempt went
    through; one that Stripe turned down is not repeated but tried afresh.
    """
    for intent, _ in reversed(finished):
        if intent.kind != kind or (params is not None and any(intent.params.get(k) != v for k, v in params.items())):
            continue
        if not _went_through(store, intent):
            continue
        if wanted is None and remaining.minor == 0:
            return intent
        if wanted is not None and intent.amount_minor == wanted.minor:
            return intent
    return None


def _went_through(store: Store, intent: Intent) -> bool:
    if intent.kind == "refund":
        assert intent.refund_id is not None
        return store.get_refund(intent.refund_id).status.counts
    status = store.get_payment(intent.payment_id).status
    if intent.kind == "void":
        return status is PaymentStatus.CANCELED
    if intent.kind == "capture":
        return status not in (PaymentStatus.AUTHORIZED, PaymentStatus.CANCELED)
    return status not in (PaymentStatus.PENDING, PaymentStatus.FAILED, PaymentStatus.CANCELED)


def _rerun_result(store: Store, intent: Intent, action: str, recovered: list[str]) -> MovementResult:
    """The result of a rerun that only finished ``intent``: its plan as the first attempt made it."""
    p = store.get_payment(intent.payment_id)
    invoice = store.get_invoice(p.invoice_id)
    amount = Money(intent.amount_minor, p.currency) if intent.amount_minor is not None else p.amount
    refund_id = None
    if action == "refund":
        assert intent.refund_id is not None
        refund_id = intent.refund_id
        amount = store.get_refund(refund_id).amount
        counted = store.get_refund(refund_id).status.counts
        before_p = d.reverse_refund(p, amount, at=now()) if counted else p
    elif action == "capture":
        before_p = replace(p, captured=p.captured - amount, status=PaymentStatus.AUTHORIZED)
    elif action == "void":
        before_p = replace(p, status=PaymentStatus.AUTHORIZED)
    else:  # a charge or an authorization: before it, the payment was not there
        before_p = replace(p, captured=Money.zero(p.currency), refunded=Money.zero(p.currency))
    others = [q for q in store.payments_for_invoice(invoice.id) if q.id != p.id]
    before = d.invoice_balance(invoice.total, [*others, before_p])
    status_before = "—" if action in ("charge", "authorize") else before_p.status.value
    plan = Plan(action, p.id, p.invoice_id, amount, before, invoice.balance, status_before, p.status.value)
    return replace(_result(store, plan, refund_id=refund_id, recovered=recovered), rerun=True)


def _finish(ctx: Context, store: Store, gw: StripeGateway, intent: Intent) -> str:
    finishers = {"refund": _finish_refund, "capture": _finish_capture, "void": _finish_void,
                 "collect": _finish_collect}
    return finishers[intent.kind](ctx, store, gw, intent)


def _finish_refund(ctx: Context, store: Store, gw: StripeGateway, intent: Intent) -> str:
    assert intent.refund_id is not None
    local = store.get_refund(intent.refund_id)
    p = store.get_payment(intent.payment_id)
    assert p.psp_reference is not None
    found = next((r for r in gw.refunds_of(p.psp_reference) if r.local_id == local.id), None)
    if found is None:
        try:
            found = gw.create_refund(
                payment_intent_id=p.psp_reference, amount=local.amount, reason=local.reason, local_id=local.id,
                idempotency_key=intent.idempotency_key,
            )
        except ProviderRejected as exc:
            _refund_failed(ctx, store, intent, exc)
            raise
        how = "sent again with the same idempotency key"
    else:
        how = "found in Stripe by its metadata"
    _refund_answered(ctx, store, intent, found)
    return f"{local.id}: unfinished refund {how}: {found.id} {found.status}"


def _refund_answered(ctx: Context, store: Store, intent: Intent, sr: StripeRefund) -> None:
    assert intent.refund_id is not None
    with store.transaction():
        local = store.get_refund(intent.refund_id)
        p = store.get_payment(intent.payment_id)
        status = stripe_truth.refund_status(sr.status)
        # SPEC: after a refund, the payment's updated_at is the refund's own Stripe time
        p_after = replace(p, updated_at=sr.created_at)
        if not status.counts:
            p_after = d.reverse_refund(p_after, local.amount, at=from_iso(sr.created_at))
        before, after = _save(store, p_after)
        store.save_refund(replace(local, status=status, psp_reference=sr.id, created_at=sr.created_at,
                                  failure_reason=sr.failure_reason))
        store.close_intent(intent.id, "done")
        if status.counts:
            store.enqueue("refund", local.id, depends_on=store.last_outbox_id(p.id))
        store.audit(AuditEntry(
            action=f"refund.{status.value}", operator=intent.operator, subject_id=local.id, invoice_id=p.invoice_id,
            payment_id=p.id, refund_id=local.id, amount=local.amount, balance_before=before.balance,
            balance_after=after.balance, reason=intent.reason or local.reason, stripe_ref=sr.id,
            detail={"stripe_status": sr.status, "refund_reason": local.reason},
        ))
    faults.point("refund.local_commit")


def _refund_failed(ctx: Context, store: Store, intent: Intent, exc: ProviderRejected) -> None:
    assert intent.refund_id is not None
    with store.transaction():
        local = store.get_refund(intent.refund_id)
        p = store.get_payment(intent.payment_id)
        before, after = _save(store, d.reverse_refund(p, local.amount, at=now()))
        store.save_refund(replace(local, status=RefundStatus.FAILED, failure_reason=exc.code or "rejected"))
        store.close_intent(intent.id, "failed")
        store.audit(AuditEntry(
            action="refund.rejected", operator=intent.operator, subject_id=local.id, invoice_id=p.invoice_id,
            payment_id=p.id, refund_id=local.id, amount=local.amount, balance_before=before.balance,
            balance_after=after.balance, reason=intent.reason,
            detail={"stripe_code": exc.code, "stripe_request": exc.request_id, "message": exc.message},
        ))


def _finish_capture(ctx: Context, store: Store, gw: StripeGateway, intent: Intent) -> str:
    assert intent.amount_minor is not None
    amount_minor = intent.amount_minor

    def send(pi_id: str, currency: str) -> StripePayment:
        return gw.capture(pi_id, Money(amount_minor, currency), idempotency_key=intent.idempotency_key)

    def record(p: Payment, sp: StripePayment) -> tuple[Payment, Money]:
        return d.capture(p, sp.captured, at=now()), sp.captured

    return _finish_authorization(store, gw, intent, verb="capture", send=send, done="succeeded",
                                 record=record, action="payment.captured")


def _finish_void(ctx: Context, store: Store, gw: StripeGateway, intent: Intent) -> str:
    def send(pi_id: str, _currency: str) -> StripePayment:
        return gw.cancel(pi_id, idempotency_key=intent.idempotency_key)

    def record(p: Payment, _sp: StripePayment) -> tuple[Payment, Money]:
        return d.void(p, at=now()), p.amount

    return _finish_authorization(store, gw, intent, verb="void", send=send, done="canceled",
                                 record=record, action="payment.voided")


def _finish_authorization(
    store: Store, gw: StripeGateway, intent: Intent, *, verb: str,
    send: Callable[[str, str], StripePayment], done: str,
    record: Callable[[Payment, StripePayment], tuple[Payment, Money]], action: str,
) -> str:
    """Finish a capture or a void of an authorization: ask Stripe first, send (same key) only if
    the PaymentIntent still awaits capture, then record the answer in one transaction."""
    p = store.get_payment(intent.payment_id)
    assert p.psp_reference is not None
    sp = gw.payment(p.psp_reference)
    how = "found done in Stripe"
    if sp.status == "requires_capture":
        try:
            sp = send(p.psp_reference, p.currency)
        except ProviderRejected as exc:
            _close_failed(store, intent, exc)
            raise
        how = "sent again with the same idempotency key"
    faults.point(f"{verb}.stripe_answered")
    with store.transaction():
        p = store.get_payment(intent.payment_id)
        if sp.status == done and p.status is PaymentStatus.AUTHORIZED:
            moved, amount = record(p, sp)
            before, after = _save(store, moved)
            if moved.captured.minor > p.captured.minor:
                store.enqueue("payment", p.id)
            store.close_intent(intent.id, "done")
            store.audit(AuditEntry(
                action=action, operator=intent.operator, subject_id=p.id, invoice_id=p.invoice_id,
                payment_id=p.id, amount=amount, balance_before=before.balance, balance_after=after.balance,
                reason=intent.reason, stripe_ref=sp.id,
            ))
        else:
            store.close_intent(intent.id, "failed")
            stripe_truth.absorb(store, operator=intent.operator, payment=p, sp=sp, why=f"{verb} finished elsewhere")
    faults.point(f"{verb}.local_commit")
    return f"{p.id}: unfinished {verb} {how}: Stripe status {sp.status}"


def _finish_collect(ctx: Context, store: Store, gw: StripeGateway, intent: Intent) -> str:
    p = store.get_payment(intent.payment_id)
    invoice = store.get_invoice(p.invoice_id)
    created = int(from_iso(intent.created_at).timestamp()) - 300
    sp = gw.find_payment_by_metadata(payment_id=p.id, customer=invoice.stripe_customer, created_after=created)
    how = "found in Stripe by its metadata"
    if sp is None:
        try:
            sp = gw.create_payment_intent(
                amount=p.amount, payment_method=intent.params["payment_method"], customer=invoice.stripe_customer,
                manual_capture=bool(intent.params.get("manual_capture")), metadata=_collect_metadata(p),
                idempotency_key=intent.idempotency_key,
            )
        except ProviderRejected as exc:
            _collect_failed(store, intent, exc)
            raise
        how = "sent again with the same idempotency key"
    _collect_answered(store, intent, sp)
    return f"{p.id}: unfinished charge {how}: {sp.id} {sp.status}"


def _collect_metadata(p: Payment) -> dict[str, str]:
    return {"kollrefund_payment_id": p.id, "kollrefund_invoice_id": p.invoice_id}


def _collect_answered(store: Store, intent: Intent, sp: StripePayment) -> None:
    with store.transaction():
        p = store.get_payment(intent.payment_id)
        at = from_iso(sp.created_at)
        if sp.status == "requires_capture":
            p = d.authorize(p, psp_reference=sp.id, at=at)
            store.set_capture_before(p.id, sp.capture_before)
        elif sp.status == "succeeded":
            p = d.capture(replace(p, psp_reference=sp.id), sp.captured, at=at)
        elif sp.status in ("requires_payment_method", "canceled"):
            p = d.fail(replace(p, psp_reference=sp.id), at=at)
        else:  # processing, requires_action: Stripe has not decided yet
            p = replace(p, psp_reference=sp.id)
        before, after = _save(store, p)
        if p.captured.minor > 0:
            store.enqueue("payment", p.id)
        store.close_intent(intent.id, "done")
        store.audit(AuditEntry(
            action=f"payment.{p.status.value}", operator=intent.operator, subject_id=p.id, invoice_id=p.invoice_id,
            payment_id=p.id, amount=p.amount, balance_before=before.balance, balance_after=after.balance,
            reason=intent.reason, stripe_ref=sp.id, detail={"stripe_status": sp.status},
        ))
    faults.point("collect.local_commit")


def _collect_failed(store: Store, intent: Intent, exc: ProviderRejected) -> None:
    with store.transaction():
        p = store.get_payment(intent.payment_id)
        p = d.fail(replace(p, psp_reference=exc.psp_reference or p.psp_reference), at=now())
        store.save_payment(p)
        store.close_intent(intent.id, "failed")
        store.audit(AuditEntry(
            action="payment.failed", operator=intent.operator, subject_id=p.id, invoice_id=p.invoice_id,
            payment_id=p.id, amount=p.amount, reason=intent.reason, stripe_ref=p.psp_reference,
            detail={"stripe_code": exc.code, "stripe_request": exc.request_id, "message": exc.message},
        ))


def _close_failed(store: Store, intent: Intent, exc: ProviderRejected) -> None:
    with store.transaction():
        store.close_intent(intent.id, "failed")
        store.audit(AuditEntry(
            action=f"{intent.kind}.rejected", operator=intent.operator, subject_id=intent.payment_id,
            payment_id=intent.payment_id, reason=intent.reason,
            detail={"stripe_code": exc.code, "stripe_request": exc.request_id, "message": exc.message},
        ))


# -- the commands ---------------------------------------------------------------------


def _amount_wanted(text: str | None, currency: str) -> Money | None:
    """An operator's ``--amount``: positive, exact, and in a step Stripe takes; None means "all"."""
    if text is None:
        return None
    wanted = parse_positive(text, currency)
    check_stripe_amount(wanted)
    return wanted


def refund(
    ctx: Context, payment_id: str, *, amount: str | None, reason: str | None, dry_run: bool, live: bool,
    confirm: Confirm, note: str | None = None,
) -> MovementResult:
    """Refund through Stripe and restore the invoice balance; without ``amount``, all that remains."""
    if reason is not None and reason not in d.REFUND_REASONS:
        raise UsageError(f"Unknown refund reason {reason!r}; use one of {', '.join(d.REFUND_REASONS)}.")
    gw = gateway(ctx, live=live)
    with ctx.open_store(readonly=dry_run) as store:
        p = store.get_payment(payment_id)
        wanted = _amount_wanted(amount, p.currency)
        with money_lock(ctx, payment_id):
            finished = [] if dry_run else _resume(ctx, store, gw, payment_id)
            recovered = [text for _, text in finished]
            p = store.get_payment(payment_id)
            rerun = _rerun_of(store, finished, "refund", wanted, p.refundable)
            if rerun is not None:
                return _rerun_result(store, rerun, "refund", recovered)
            _guard(ctx, store, gw, p, dry_run=dry_run)
            value = wanted if wanted is not None else p.refundable
            d.check_refundable(p, value)
            after_p = d.refund(p, value, at=now())
            before, after = _settled(store, after_p)
            plan = Plan("refund", p.id, p.invoice_id, value, before.balance, after.balance, p.status.value,
                        after_p.status.value, detail=reason or "")
            if dry_run:
                return MovementResult(plan, dry_run=True, recovered=recovered)
            confirm(plan)
            with store.transaction():
                refund_id = store.next_id("RF")
                store.insert_refund(d.new_refund(id=refund_id, payment=p, amount=value, reason=reason, at=now()))
                _save(store, after_p)  # the payment as the plan showed it
                intent_id = store.add_intent(
                    kind="refund", payment_id=p.id, refund_id=refund_id, amount_minor=value.minor,
                    idempotency_key=_key("refund", refund_id), params={}, operator=ctx.operator, reason=note,
                )
                store.audit(AuditEntry(
                    action="refund.requested", operator=ctx.operator, subject_id=refund_id, invoice_id=p.invoice_id,
                    payment_id=p.id, refund_id=refund_id, amount=value, balance_before=before.balance,
                    balance_after=after.balance, reason=note, stripe_ref=p.psp_reference,
                    detail={"refund_reason": reason},
                ))
            faults.point("refund.intent_recorded")
            intent = next(i for i in store.open_intents(p.id) if i.id == intent_id)
            assert p.psp_reference is not None
            try:
                sr = gw.create_refund(payment_intent_id=p.psp_reference, amount=value, reason=reason,
                                      local_id=refund_id, idempotency_key=intent.idempotency_key)
            except ProviderRejected as exc:
                _refund_failed(ctx, store, intent, exc)
                raise
            faults.point("refund.stripe_answered")
            _refund_answered(ctx, store, intent, sr)
            return _result(store, plan, refund_id=refund_id, recovered=recovered)


def capture(
    ctx: Context, payment_id: str, *, amount: str | None, dry_run: bool, live: bool, confirm: Confirm,
    note: str | None = None,
) -> MovementResult:
    gw = gateway(ctx, live=live)
    with ctx.open_store(readonly=dry_run) as store:
        p = store.get_payment(payment_id)
        wanted = _amount_wanted(amount, p.currency)
        with money_lock(ctx, payment_id):
            finished = [] if dry_run else _resume(ctx, store, gw, payment_id)
            recovered = [text for _, text in finished]
            p = store.get_payment(payment_id)
            rerun = _rerun_of(store, finished, "capture", wanted, p.capturable)
            if rerun is not None:
                return _rerun_result(store, rerun, "capture", recovered)
            _guard(ctx, store, gw, p, dry_run=dry_run)
            value = wanted if wanted is not None else p.capturable
            after_p = d.capture(p, value, at=now())
            before, after = _settled(store, after_p)
            released = p.amount - after_p.captured
            plan = Plan("capture", p.id, p.invoice_id, value, before.balance, after.balance, p.status.value,
                        after_p.status.value, detail=f"{released.display()} released" if released.minor else "")
            if dry_run:
                return MovementResult(plan, dry_run=True, recovered=recovered)
            confirm(plan)
            with store.transaction():
                intent_id = store.add_intent(
                    kind="capture", payment_id=p.id, refund_id=None, amount_minor=value.minor,
                    idempotency_key=_key("capture", p.id), params={}, operator=ctx.operator, reason=note,
                )
                store.audit(AuditEntry(
                    action="capture.requested", operator=ctx.operator, subject_id=p.id, invoice_id=p.invoice_id,
                    payment_id=p.id, amount=value, balance_before=before.balance, reason=note,
                    stripe_ref=p.psp_reference,
                ))
            faults.point("capture.intent_recorded")
            intent = next(i for i in store.open_intents(p.id) if i.id == intent_id)
            _finish_capture(ctx, store, gw, intent)
            return _result(store, plan, recovered=recovered)


def void(
    ctx: Context, payment_id: str, *, dry_run: bool, live: bool, confirm: Confirm, note: str | None = None
) -> MovementResult:
    gw = gateway(ctx, live=live)
    with ctx.open_store(readonly=dry_run) as store:
        p = store.get_payment(payment_id)
        with money_lock(ctx, payment_id):
            finished = [] if dry_run else _resume(ctx, store, gw, payment_id)
            recovered = [text for _, text in finished]
            p = store.get_payment(payment_id)
            rerun = _rerun_of(store, finished, "void", None, p.capturable)
            if rerun is not None:
                return _rerun_result(store, rerun, "void", recovered)
            _guard(ctx, store, gw, p, dry_run=dry_run)
            after_p = d.void(p, at=now())
            before, after = _settled(store, after_p)
            plan = Plan("void", p.id, p.invoice_id, p.amount, before.balance, after.balance, p.status.value,
                        after_p.status.value, detail="the authorization is released")
            if dry_run:
                return MovementResult(plan, dry_run=True, recovered=recovered)
            confirm(plan)
            with store.transaction():
                intent_id = store.add_intent(
                    kind="void", payment_id=p.id, refund_id=None, amount_minor=None,
                    idempotency_key=_key("void", p.id), params={}, operator=ctx.operator, reason=note,
                )
                store.audit(AuditEntry(
                    action="void.requested", operator=ctx.operator, subject_id=p.id, invoice_id=p.invoice_id,
                    payment_id=p.id, amount=p.amount, balance_before=before.balance, reason=note,
                    stripe_ref=p.psp_reference,
                ))
            faults.point("void.intent_recorded")
            intent = next(i for i in store.open_intents(p.id) if i.id == intent_id)
            _finish_void(ctx, store, gw, intent)
            return _result(store, plan, recovered=recovered)


def collect(
    ctx: Context, invoice_id: str, *, payment_method: str, amount: str | None, manual_capture: bool, dry_run: bool,
    live: bool, confirm: Confirm, note: str | None = None,
) -> MovementResult:
    """Charge a saved card for an invoice and record the payment applied to it."""
    if not payment_method.startswith("pm_"):
        raise UsageError(f"{payment_method!r} is not a Stripe PaymentMethod id (pm_…).")
    gw = gateway(ctx, live=live)
    with ctx.open_store(readonly=dry_run) as store:
        invoice = store.get_invoice(invoice_id)
        wanted = parse_positive(amount, invoice.currency) if amount is not None else None
        if wanted is not None:
            check_stripe_amount(wanted)
        with money_lock(ctx, invoice_id):
            finished: list[tuple[Intent, str]] = []
            if not dry_run:
                for p in store.payments_for_invoice(invoice_id):
                    if store.open_intents(p.id):
                        with money_lock(ctx, p.id):
                            finished += _resume(ctx, store, gw, p.id)
            recovered = [text for _, text in finished]
            invoice = store.get_invoice(invoice_id)
            payments = store.payments_for_invoice(invoice_id)
            open_amount = d.open_amount(invoice, payments)
            rerun = _rerun_of(store, finished, "collect", wanted, open_amount,
                              {"payment_method": payment_method, "manual_capture": manual_capture})
            if rerun is not None:
                return _rerun_result(store, rerun, "authorize" if manual_capture else "charge", recovered)
            value = wanted if wanted is not None else open_amount
            check_stripe_amount(value)
            d.check_applicable(invoice, payments, value)
            probe = d.new_payment(id="PAY-new", invoice_id=invoice.id, amount=value, psp_reference=None, at=now())
            probe = probe if manual_capture else d.capture(probe, at=now())
            after = d.settle_invoice(invoice, [*payments, probe])
            plan = Plan("authorize" if manual_capture else "charge", "a new payment", invoice.id, value,
                        invoice.balance, after.balance, "—", "authorized" if manual_capture else "paid",
                        detail=payment_method)
            if dry_run:
                return MovementResult(plan, dry_run=True, recovered=recovered)
            confirm(plan)
            with store.transaction():
                payment_id = store.next_id("PAY")
                p = d.new_payment(id=payment_id, invoice_id=invoice.id, amount=value, psp_reference=None, at=now())
                store.insert_payment(p)
                intent_id = store.add_intent(
                    kind="collect", payment_id=p.id, refund_id=None, amount_minor=value.minor,
                    idempotency_key=_key("collect", p.id),
                    params={"payment_method": payment_method, "manual_capture": manual_capture},
                    operator=ctx.operator, reason=note,
                )
                store.audit(AuditEntry(
                    action="collect.requested", operator=ctx.operator, subject_id=p.id, invoice_id=invoice.id,
                    payment_id=p.id, amount=value, balance_before=invoice.balance, reason=note,
                    detail={"payment_method": payment_method, "manual_capture": manual_capture},
                ))
            faults.point("collect.intent_recorded")
            intent = next(i for i in store.open_intents(p.id) if i.id == intent_id)
            try:
                sp = gw.create_payment_intent(
                    amount=value, payment_method=payment_method, customer=invoice.stripe_customer,
                    manual_capture=manual_capture, metadata=_collect_metadata(p),
                    idempotency_key=intent.idempotency_key,
                )
            except ProviderRejected as exc:
                _collect_failed(store, intent, exc)
                raise
            faults.point("collect.stripe_answered")
            _collect_answered(store, intent, sp)
            plan = replace(plan, payment_id=p.id)
            return _result(store, plan, recovered=recovered)


def resume(ctx: Context, *, live: bool) -> list[str]:
    """Finish every money movement a crash left half done."""
    with ctx.open_store() as store:
        intents = store.open_intents()
        if not intents:
            return []
        gw = gateway(ctx, live=live)
        notes: list[str] = []
        for payment_id in dict.fromkeys(i.payment_id for i in intents):
            with money_lock(ctx, payment_id):
                notes += resume_payment(ctx, store, gw, payment_id)
        return notes


def describe_intents(ctx: Context) -> list[dict[str, Any]]:
    with ctx.open_store(readonly=True) as store:
        return [
            {"kind": i.kind, "payment_id": i.payment_id, "refund_id": i.refund_id, "since": i.created_at}
            for i in store.open_intents()
        ]
