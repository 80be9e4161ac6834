"""Subprocess entry point: localstripe on 127.0.0.1 only, without persistence.

Run as ``python -m kollrefund.sandbox._localstripe_main --port 0``. It binds
127.0.0.1 (never ``[::]`` as stock localstripe does), prints ``PORT <n>`` on
stdout once the socket listens, and exits when its stdin closes, so it never
outlives the process that started it.

localstripe (GPL-3.0-or-later) is imported and wrapped here, never copied. Its
pickle persistence to the hard-coded ``/tmp/localstripe.pickle`` is switched off
before anything is stored, so each instance keeps its own state in memory.
The data-model half of the fidelity layer lives here too (:func:`_patch`): the
rules that need localstripe's objects (over-refund, uncaptured refund, reason,
PaymentIntent/Charge shape, partial capture, 404 wording, list filters, declines,
failed refunds). The transport half (keys, idempotency, faults) is in
``stripe_fidelity``. Each rule carries its documentation source in a comment.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading
from typing import Any


def _disable_persistence(resources: Any) -> None:
    # localstripe's Store.try_load_from_disk / dump_to_disk read and rewrite
    # /tmp/localstripe.pickle after every write; both become no-ops here.
    def _no_load(self: Any) -> None:
        return None

    def _no_dump(self: Any) -> None:
        return None

    resources.Store.try_load_from_disk = _no_load
    resources.Store.dump_to_disk = _no_dump


def _exit_when_parent_goes() -> None:
    # The parent holds our stdin pipe open; EOF means it is gone (even after
    # SIGKILL), so leave at once rather than linger as a stray process.
    try:
        sys.stdin.buffer.read()
    finally:
        os._exit(0)


# --------------------------------------------------------------------------
# Data-model fidelity. ``r`` is localstripe.resources, ``srv`` its server module.
# --------------------------------------------------------------------------

# Stripe API reference, Refund object, `reason`: "user-provided (duplicate,
# fraudulent, or requested_by_customer)". localstripe rejects the parameter.
REFUND_REASONS = ("duplicate", "fraudulent", "requested_by_customer")
# Stripe API reference, Refund object, `failure_reason`: "Possible values are:
# lost_or_stolen_card, expired_or_canceled_card, charge_for_pending_refund_disputed,
# insufficient_funds, declined, merchant_request, or unknown".
FAILURE_REASONS = (
    "lost_or_stolen_card", "expired_or_canceled_card", "charge_for_pending_refund_disputed",
    "insufficient_funds", "declined", "merchant_request", "unknown",
)
# Stripe testing docs ("Declined payments"): 4000000000000002 / pm_card_chargeDeclined
# (also listed as pm_card_visa_chargeDeclined) declines with decline_code
# generic_decline; 4000000000009995 / pm_card_chargeDeclinedInsufficientFunds with
# insufficient_funds. Messages as in Stripe's decline responses.
DECLINING_CARDS = {
    "4000000000000002": ("generic_decline", "Your card was declined."),
    "4000000000009995": ("insufficient_funds", "Your card has insufficient funds."),
}
DECLINE_ALIASES = {
    "pm_card_chargeDeclined": "4000000000000002",
    "pm_card_visa_chargeDeclined": "4000000000000002",
    "pm_card_chargeDeclinedInsufficientFunds": "4000000000009995",
    "pm_card_visa_chargeDeclinedInsufficientFunds": "4000000000009995",
}
# 404 wording: Stripe answers "No such payment_intent: 'pi_x'" (code resource_missing)
# and, for payment methods, "No such PaymentMethod: 'pm_x'". The docs list the code
# (error codes: resource_missing, "The ID provided is not valid"); the wording is
# what Stripe's responses show, the docs do not spell it out.
OBJECT_NAMES = {"payment_method": "PaymentMethod"}


def _money(amount: int, currency: str) -> str:
    # Over-refund message format seen in Stripe responses: "Refund amount ($25.00) is
    # greater than unrefunded amount on charge ($21.45)". Docs are silent on the
    # format for other currencies; we print zero-decimal currencies without decimals.
    zero_decimal = {"jpy", "krw", "vnd", "clp", "pyg", "ugx", "xaf", "xof", "bif", "djf",
                    "gnf", "kmf", "mga", "rwf", "vuv", "xpf"}
    symbols = {"usd": "$", "eur": "€", "gbp": "£", "jpy": "¥", "cad": "$", "aud": "$"}
    cur = currency.lower()
    text = f"{amount:,}" if cur in zero_decimal else f"{amount / 100:,.2f}"
    sym = symbols.get(cur)
    return f"{sym}{text}" if sym else f"{text} {cur.upper()}"


def _patch(r: Any, srv: Any, web: Any) -> None:
    from localstripe.errors import UserError

    store = r.store

    class StripeError(UserError):  # type: ignore[misc]
        """An error with Stripe's full body (localstripe forces type/omits code)."""

        def __init__(self, status: int, **error: Any) -> None:
            UserError.__init__(self, status)
            error.setdefault("type", "invalid_request_error")
            code = error.get("code")
            if code and "doc_url" not in error:
                error["doc_url"] = "https://stripe.com/docs/error-codes/" + code.replace("_", "-")
            self.body = {"error": error}

    def invalid(message: str, param: str | None = None, code: str | None = None) -> Any:
        fields: dict[str, Any] = {"message": message}
        if param:
            fields["param"] = param
        if code:
            fields["code"] = code
        return StripeError(400, **fields)

    def missing(obj_name: str, obj_id: str, param: str) -> Any:
        name = OBJECT_NAMES.get(obj_name, obj_name)
        return StripeError(404, code="resource_missing", param=param,
                           message=f"No such {name}: '{obj_id}'")

    # ---- rule 6: 404 shape ------------------------------------------------
    orig_retrieve = r.StripeObject._api_retrieve.__func__

    def _api_retrieve(cls: Any, /, id: Any) -> Any:
        try:
            return orig_retrieve(cls, id)
        except UserError as e:
            if e.code == 404 and not isinstance(e, StripeError):
                raise missing(cls.object, str(id), "id") from None
            raise

    r.StripeObject._api_retrieve = classmethod(_api_retrieve)

    def lookup(kind: str, obj_id: Any, param: str) -> Any:
        obj = store.get(f"{kind}:{obj_id}")
        if obj is None:
            raise missing(kind, str(obj_id), param)
        return obj

    # ---- rule 5 / 10: Charge amounts --------------------------------------
    # Charge.amount_captured (API reference): "Amount ... captured (can be less than
    # the amount attribute on the charge if a partial capture was made)".
    def amount_captured(self: Any) -> int:
        if not self.captured or self.status != "succeeded":
            return 0
        captured = getattr(self, "_kr_captured", None)
        return int(self.amount if captured is None else captured)

    def refunds_of(charge_id: str) -> list[Any]:
        return [v for k, v in store.items() if k.startswith("refund:") and v.charge == charge_id]

    # A failed (or canceled) refund gives the money back to the balance, so it no
    # longer counts in amount_refunded (Stripe docs, "Refunds: failed refunds": the
    # funds are returned to your balance). Docs are silent on the exact field effect;
    # this is what Stripe's Charge shows (only succeeded/pending refunds counted).
    def amount_refunded(self: Any) -> int:
        return sum(int(x.amount) for x in refunds_of(self.id)
                   if x.status not in ("failed", "canceled"))

    # Charge.refunded: "Whether the charge has been fully refunded. If the charge is
    # only partially refunded, this attribute will still be false."
    def refunded(self: Any) -> bool:
        captured = amount_captured(self)
        return captured > 0 and amount_refunded(self) >= captured

    r.Charge.amount_captured = property(amount_captured)
    r.Charge.amount_refunded = property(amount_refunded)
    r.Charge.refunded = property(refunded)

    # ---- rule 5: partial capture (API 2025-03-31.basil changelog, "Partially
    # capturing or canceling payments no longer creates a Refund": no Refund object,
    # not listed in refunds, amount_refunded not updated, and the capture's balance
    # transaction shows the captured amount). localstripe invents a Refund; drop it.
    orig_capture = r.Charge._capture

    def _capture(self: Any, amount: Any, on_success: Any = None) -> None:
        before = {k for k in store if k.startswith("refund:")}
        orig_capture(self, amount, on_success)
        captured = self.amount if amount is None else int(r.try_convert_to_int(amount))
        self._kr_captured = captured
        for key in [k for k in store if k.startswith("refund:") and k not in before]:
            ref = store[key]
            if ref.charge == self.id:
                store.pop("balance_transaction:" + str(ref.balance_transaction), None)
                del store[key]
        txn = store.get(f"balance_transaction:{self.balance_transaction}")
        if txn is not None:
            txn.amount = captured

    r.Charge._capture = _capture

    # ---- rule 5: PaymentIntent shape ---------------------------------------
    # PaymentIntent.amount_capturable: "Amount that can be captured from this
    # PaymentIntent"; amount_received: "Amount that this PaymentIntent collects".
    def pi_capturable(self: Any) -> int:
        return int(self.amount) if self.status == "requires_capture" else 0

    def pi_received(self: Any) -> int:
        charge = self.latest_charge
        return 0 if charge is None else amount_captured(charge)

    r.PaymentIntent.amount_capturable = property(pi_capturable)
    r.PaymentIntent.amount_received = property(pi_received)
    orig_export = r.StripeObject._export

    # latest_charge is "Expandable": an ID string unless expand[]=latest_charge.
    # The `charges` list was removed in API 2022-11-15 (changelog).
    def pi_export(self: Any, expand: Any = None) -> Any:
        obj = orig_export(self, expand=expand)
        paths = expand if isinstance(expand, list) else []
        wanted = any(p == "latest_charge" or str(p).startswith("latest_charge.") for p in paths)
        if not wanted:
            obj["latest_charge"] = None if self.latest_charge is None else self.latest_charge.id
        obj.pop("charges", None)
        return obj

    r.PaymentIntent._export = pi_export

    # ---- rules 2, 3, 4: refund creation -------------------------------------
    orig_refund_create = r.Refund._api_create.__func__

    def refund_create(cls: Any, /, reason: Any = None, **data: Any) -> Any:
        if reason is not None and reason not in REFUND_REASONS:
            # Stripe rejects an unknown enum value with param=reason.
            raise invalid("Invalid reason: must be one of duplicate, fraudulent, or "
                          "requested_by_customer", param="reason")
        pi_id, ch_id = data.get("payment_intent"), data.get("charge")
        if pi_id is not None and ch_id is None:
            pi = lookup("payment_intent", pi_id, "payment_intent")
            charge = pi.latest_charge
            if charge is None or charge.status != "succeeded":
                # Stripe's wording for a PaymentIntent with no successful charge.
                raise invalid(f"This PaymentIntent ({pi.id}) does not have a successful "
                              "charge to refund.", param="payment_intent",
                              code="charge_not_refundable")
        elif ch_id is not None and pi_id is None:
            charge = lookup("charge", ch_id, "charge")
            if charge.status != "succeeded":
                raise invalid(f"Charge {charge.id} has failed and cannot be refunded.",
                              param="charge", code="charge_not_refundable")
        else:
            return orig_refund_create(cls, **data)
        if not charge.captured:
            # An authorization is released by canceling the PaymentIntent (API reference,
            # "Cancel a PaymentIntent"); refunds apply to captured funds. The docs list the
            # code charge_not_refundable but do not spell out this message.
            raise invalid(f"Charge {charge.id} has not been captured, so it cannot be "
                          "refunded. Cancel the PaymentIntent to release the authorization.",
                          param="payment_intent" if pi_id else "charge",
                          code="charge_not_refundable")
        remaining = amount_captured(charge) - amount_refunded(charge)
        amount = r.try_convert_to_int(data.get("amount"))
        if amount is not None and (type(amount) is not int or amount <= 0):
            raise invalid("Invalid positive integer", param="amount",
                          code="parameter_invalid_integer")
        if remaining <= 0:
            # Error codes: charge_already_refunded, "The charge you're attempting to
            # refund has already been refunded."
            raise invalid(f"Charge {charge.id} has already been refunded.",
                          code="charge_already_refunded")
        if amount is not None and amount > remaining:
            # Error codes: amount_too_large ("The specified amount is greater than the
            # maximum amount allowed"); message as Stripe returns it, param amount.
            raise invalid(f"Refund amount ({_money(amount, charge.currency)}) is greater "
                          "than unrefunded amount on charge "
                          f"({_money(remaining, charge.currency)})",
                          param="amount", code="amount_too_large")
        # Create refund: "amount ... Defaults to the entire charge amount" i.e. what
        # remains refundable; localstripe would use the full charge amount.
        data["amount"] = remaining if amount is None else amount
        obj = orig_refund_create(cls, **data)
        obj.reason = reason
        if obj.payment_intent is None:
            obj.payment_intent = charge.payment_intent
        return obj

    r.Refund._api_create = classmethod(refund_create)

    def _refund_update(cls: Any, /, id: Any, **data: Any) -> Any:
        # Update a refund: only `metadata` can be updated.
        unknown = [k for k in data if k != "metadata"]
        if unknown:
            raise invalid(f"Received unknown parameter: {unknown[0]}", param=unknown[0],
                          code="parameter_unknown")
        return r.StripeObject._api_update.__func__(cls, id, **data)

    r.Refund._api_update = classmethod(_refund_update)

    # ---- rule 7: refunds.list created[...] filters, payment_intent without charge
    orig_refund_list = r.Refund._api_list_all.__func__

    def refund_list(cls: Any, /, url: Any, created: Any = None, payment_intent: Any = None,
                    **kw: Any) -> Any:
        if payment_intent is not None:
            pi = lookup("payment_intent", payment_intent, "payment_intent")
            if pi.latest_charge is None:
                li = r.List(url, limit=kw.get("limit"), starting_after=kw.get("starting_after"))
                return li
            kw["payment_intent"] = payment_intent
        li = orig_refund_list(cls, url, **kw)
        if created is not None:
            li._list = [x for x in li._list if _created_ok(x.created, created)]
        # Stripe lists newest first; within one second keep creation order (newest first).
        order = {k: i for i, k in enumerate(store)}
        li._list.sort(key=lambda x: (x.created, order.get("refund:" + x.id, 0)), reverse=True)
        return li

    def _created_ok(value: int, created: Any) -> bool:
        if not isinstance(created, dict):
            created = {"eq": created}
        for op, raw in created.items():
            bound = r.try_convert_to_int(raw)
            if type(bound) is not int or op not in ("eq", "gt", "gte", "lt", "lte"):
                raise invalid(f"Invalid integer: {raw}", param=f"created[{op}]",
                              code="parameter_invalid_integer")
            if not {"eq": value == bound, "gt": value > bound, "gte": value >= bound,
                    "lt": value < bound, "lte": value <= bound}[op]:
                return False
        return True

    r.Refund._api_list_all = classmethod(refund_list)

    # charges.list(payment_intent=...) crashes localstripe; filter here.
    orig_charge_list = r.Charge._api_list_all.__func__

    def charge_list(cls: Any, /, url: Any, payment_intent: Any = None, **kw: Any) -> Any:
        li = orig_charge_list(cls, url, **kw)
        if payment_intent is not None:
            li._list = [c for c in li._list if c.payment_intent == payment_intent]
        return li

    r.Charge._api_list_all = classmethod(charge_list)

    # payment_intents.list(created=..., customer=...): localstripe takes no filter at
    # all; Stripe takes both and lists newest first (a crashed `collect` is found by
    # listing recent PaymentIntents and matching their metadata).
    orig_pi_list = r.PaymentIntent._api_list_all.__func__

    def payment_intent_list(cls: Any, /, url: Any, created: Any = None, customer: Any = None,
                            **kw: Any) -> Any:
        li = orig_pi_list(cls, url, **kw)
        if created is not None:
            li._list = [x for x in li._list if _created_ok(x.created, created)]
        if customer is not None:
            li._list = [x for x in li._list if x.customer == customer]
        order = {k: i for i, k in enumerate(store)}
        li._list.sort(key=lambda x: (x.created, order.get("payment_intent:" + x.id, 0)), reverse=True)
        return li

    r.PaymentIntent._api_list_all = classmethod(payment_intent_list)

    # ---- rule 9: declines ----------------------------------------------------
    orig_article = r.PaymentMethod._try_get_canonical_test_article.__func__

    def test_article(cls: Any, /, id: Any) -> Any:
        number = DECLINE_ALIASES.get(id)
        if number is not None:
            return r.PaymentMethod(type="card", card={
                "number": number, "exp_month": "12", "exp_year": "2034", "cvc": "123"})
        return orig_article(cls, id)

    r.PaymentMethod._try_get_canonical_test_article = classmethod(test_article)
    orig_declined = r.PaymentMethod._charging_is_declined

    def charging_is_declined(self: Any) -> bool:
        if getattr(self, "_card_number", None) in DECLINING_CARDS:
            return True
        return bool(orig_declined(self))

    r.PaymentMethod._charging_is_declined = charging_is_declined

    def decline_of(charge: Any) -> tuple[str, str]:
        pm = store.get(f"payment_method:{charge.payment_method}")
        number = getattr(pm, "_card_number", None)
        return DECLINING_CARDS.get(number or "", ("generic_decline", "Your card was declined."))

    orig_set_failure = r.Charge._set_auth_failure

    def set_auth_failure(self: Any) -> None:
        orig_set_failure(self)
        self.failure_message = decline_of(self)[1]

    r.Charge._set_auth_failure = set_auth_failure

    # API errors: a card_error carries code, decline_code, charge and payment_intent.
    def raise_failure(self: Any) -> None:
        decline_code, message = decline_of(self)
        error: dict[str, Any] = {
            "type": "card_error", "code": self.failure_code or "card_declined",
            "decline_code": decline_code, "message": message, "charge": self.id,
            "doc_url": "https://stripe.com/docs/error-codes/card-declined",
        }
        pi = store.get(f"payment_intent:{self.payment_intent}")
        if pi is not None:
            error["payment_intent"] = pi._export()
        raise StripeError(402, **error)

    r.Charge._raise_failure = raise_failure
    orig_last_error = r.PaymentIntent.last_payment_error.fget

    def last_payment_error(self: Any) -> Any:
        err = orig_last_error(self)
        if err and err.get("charge") and self.latest_charge is not None:
            err = dict(err, type="card_error", decline_code=decline_of(self.latest_charge)[0],
                       message=decline_of(self.latest_charge)[1])
        return err

    r.PaymentIntent.last_payment_error = property(last_payment_error)

    # ---- rule 10: a refund that fails later (control endpoint) ---------------
    async def fail_refund(request: Any) -> Any:
        try:
            data = await request.json()
        except Exception:
            data = dict(await request.post())
        reason = (data or {}).get("failure_reason") or "unknown"
        refund = lookup("refund", request.match_info["id"], "id")
        if reason not in FAILURE_REASONS:
            raise invalid("Invalid failure_reason: must be one of " + ", ".join(FAILURE_REASONS),
                          param="failure_reason")
        if refund.status not in ("succeeded", "pending"):
            raise invalid(f"Refund {refund.id} is {refund.status} and cannot fail.")
        # Refund object: status "failed", failure_reason, and failure_balance_transaction
        # "describes the adjustment made on your account balance that reverses the
        # initial balance transaction".
        txn = r.BalanceTransaction(amount=int(refund.amount), currency=refund.currency,
                                   description="REFUND FAILURE", exchange_rate=1.0,
                                   reporting_category="refund", source=refund.id,
                                   type="refund")
        txn.type = txn.reporting_category = "refund_failure"
        refund.status = "failed"
        refund.failure_reason = reason
        refund.failure_balance_transaction = txn.id
        return srv.json_response(refund._export())

    srv.app.router.add_post("/_config/kollrefund/refunds/{id}/fail", fail_refund)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="kollrefund-localstripe")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--no-parent-watch", action="store_true")
    args = parser.parse_args(argv)

    from localstripe import resources  # GPL dependency, imported only in this process

    _disable_persistence(resources)

    from aiohttp import web
    from localstripe import server

    _patch(resources, server, web)

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(128)
    port = sock.getsockname()[1]

    if not args.no_parent_watch:
        threading.Thread(target=_exit_when_parent_goes, daemon=True).start()

    sys.stdout.write(f"PORT {port}\n")
    sys.stdout.flush()
    web.run_app(server.app, sock=sock, print=None, access_log=None)


if __name__ == "__main__":
    main()
