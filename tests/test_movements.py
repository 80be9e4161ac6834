"""Money movements end to end: the CLI against the local Stripe, a real SQLite cache, no mocks.

collect (auto and --manual-capture), capture (full and partial), void, refund
(full, partial, repeated), resume; confirmations, dry runs, keys; the
stale-cache guard, lost responses, Stripe's 24-hour key window; declines and
every bad input. Crashes (SIGKILL) and concurrent runs are in
test_movements_crash.py.
"""

from __future__ import annotations

import io
import sys
import threading
import time
from typing import Any

import pytest
from movement_support import (  # _cli_built_once: an autouse fixture
    _cli_built_once,  # noqa: F401
    assert_consistent,
    collect,
    error_line,
    load_invoices,
    pi_of,
    status,
    stripe_pis,
    stripe_refunds,
    stripe_state,
)

from kollrefund.store import Store
from kollrefund.stripe_gateway import stripe_time

pytestmark = pytest.mark.slow


@pytest.fixture
def ready(cli: Any, stripe_env: Any) -> Any:
    load_invoices(cli)
    return cli


# -- collect, capture, void, refund: the story --------------------------------------------


def test_collect_and_full_refund_as_the_seed_tells(ready: Any, stripe_client: Any) -> None:
    cli = ready
    out = collect(cli, "INV-9")
    assert out["dry_run"] is False and out["plan"]["action"] == "charge"
    pay = out["payment"]
    assert (pay["id"], pay["status"], pay["amount"], pay["captured"], pay["refunded"]) == (
        "PAY-1", "paid", "120.00", "120.00", "0.00")
    assert (out["invoice"]["balance"], out["invoice"]["status"]) == ("0.00", "paid")
    pi = stripe_client.v1.payment_intents.retrieve(pay["psp_reference"])
    assert (pi.status, pi.amount_received, pi.currency) == ("succeeded", 12000, "usd")
    assert pi.metadata.to_dict() == {"kollrefund_payment_id": "PAY-1", "kollrefund_invoice_id": "INV-9"}

    r = cli("refund", "PAY-1", "--reason", "requested_by_customer", "--note", "customer asked", "--yes", "--json")
    assert r.code == 0, r.err
    out = r.json()
    assert set(out) >= {"dry_run", "plan", "recovered", "invoice", "payment", "refunds", "refund_id"}
    assert set(out["plan"]) >= {"action", "payment_id", "invoice_id", "amount", "currency", "invoice_balance_before",
                                "invoice_balance_after", "payment_status_before", "payment_status_after"}
    assert out["plan"] | {} == out["plan"] and out["plan"]["amount"] == "120.00"
    assert (out["plan"]["invoice_balance_before"], out["plan"]["invoice_balance_after"]) == ("0.00", "120.00")
    assert out["refund_id"] == "RF-1" and out["recovered"] == [] and out["rerun"] is False
    [sr] = stripe_refunds(stripe_client, pi.id)
    assert (sr.amount, sr.status, sr.reason) == (12000, "succeeded", "requested_by_customer")
    assert sr.metadata.to_dict() == {"kollrefund_refund_id": "RF-1"}

    view = status(cli, "PAY-1")
    p = view["payment"]
    assert (p["status"], p["captured"], p["refunded"]) == ("refunded", "120.00", "120.00")
    assert p["updated_at"] == stripe_time(sr.created)  # SPEC: the refund's own Stripe time
    [rf] = view["refunds"]
    assert (rf["id"], rf["amount"], rf["status"], rf["reason"], rf["psp_reference"]) == (
        "RF-1", "120.00", "succeeded", "requested_by_customer", sr.id)
    assert rf["created_at"] == stripe_time(sr.created)
    assert set(rf["netsuite"]) == {"id", "sync"}
    inv = status(cli, "INV-9")["invoice"]
    assert (inv["balance"], inv["status"]) == ("120.00", "unpaid")
    assert_consistent(cli, stripe_client, "PAY-1")

    # the audit trail: every step, who, why, Stripe's ids, the balances
    entries = {e["action"]: e for e in cli("log", "PAY-1", "--json").json()["entries"]}
    assert {"collect.requested", "payment.paid", "refund.requested", "refund.succeeded"} <= set(entries)
    asked, done = entries["refund.requested"], entries["refund.succeeded"]
    assert (asked["operator"], asked["reason"], asked["balance_before"], asked["balance_after"]) == (
        "tester", "customer asked", "0.00", "120.00")
    assert (done["operator"], done["stripe_ref"], done["refund_id"]) == ("tester", sr.id, "RF-1")
    assert entries["payment.paid"]["stripe_ref"] == pi.id

    again = cli("refund", "PAY-1", "--yes")
    assert again.code == 4
    assert "PAY-1" in error_line(again.err)


def test_partial_and_repeated_refunds_up_to_what_was_captured(ready: Any, stripe_client: Any) -> None:
    cli = ready
    collect(cli, "INV-9")
    pi = pi_of(cli, "PAY-1")
    steps = [("20.00", "partially_refunded", "20.00", "partially_paid"),
             ("30.00", "partially_refunded", "50.00", "partially_paid")]
    for amount, pay_status, balance, inv_status in steps:
        r = cli("refund", "PAY-1", "--amount", amount, "--reason", "duplicate", "--yes")
        assert r.code == 0, r.err
        assert "Refunded" in r.out
        p = status(cli, "PAY-1")["payment"]
        newest = stripe_refunds(stripe_client, pi)[0]
        assert p["status"] == pay_status and p["updated_at"] == stripe_time(newest.created)
        assert newest.reason == "duplicate"
        inv = status(cli, "INV-9")["invoice"]
        assert (inv["balance"], inv["status"]) == (balance, inv_status)
    # more than remains: refused, nothing changed on either side
    snap, before = cli.snapshot(), stripe_state(stripe_client)
    r = cli("refund", "PAY-1", "--amount", "70.01", "--yes")
    assert r.code == 4 and "70.00" in error_line(r.err)
    assert cli.snapshot() == snap and stripe_state(stripe_client) == before
    # without --amount: all that remains
    r = cli("refund", "PAY-1", "--yes", "--json")
    assert r.code == 0, r.err
    assert r.json()["plan"]["amount"] == "70.00"
    assert [x.amount for x in stripe_refunds(stripe_client, pi)] == [7000, 3000, 2000]
    view = assert_consistent(cli, stripe_client, "PAY-1")
    assert [x["id"] for x in view["refunds"]] == ["RF-1", "RF-2", "RF-3"]
    assert view["payment"]["status"] == "refunded"
    assert status(cli, "INV-9")["invoice"]["status"] == "unpaid"


def test_jpy_manual_capture_partial_then_refund_of_the_captured_part(ready: Any, stripe_client: Any) -> None:
    cli = ready
    out = collect(cli, "INV-10", "--manual-capture")
    assert out["plan"]["action"] == "authorize"
    p = out["payment"]
    assert (p["status"], p["amount"], p["captured"]) == ("authorized", "1500", "0")
    assert (out["invoice"]["balance"], out["invoice"]["status"]) == ("1500", "unpaid")
    pi = stripe_client.v1.payment_intents.retrieve(p["psp_reference"])
    assert (pi.status, pi.amount_capturable) == ("requires_capture", 1500)
    assert pi.metadata.to_dict() == {"kollrefund_payment_id": "PAY-1", "kollrefund_invoice_id": "INV-10"}

    r = cli("capture", "PAY-1", "--amount", "1000", "--yes", "--json")
    assert r.code == 0, r.err
    out = r.json()
    assert (out["payment"]["status"], out["payment"]["captured"]) == ("paid", "1000")
    assert (out["invoice"]["balance"], out["invoice"]["status"]) == ("500", "partially_paid")
    pi = stripe_client.v1.payment_intents.retrieve(pi.id)
    assert (pi.status, pi.amount_received) == ("succeeded", 1000)

    snap = cli.snapshot()
    r = cli("refund", "PAY-1", "--amount", "1001", "--yes")
    assert r.code == 4 and cli.snapshot() == snap
    r = cli("refund", "PAY-1", "--amount", "400", "--yes")
    assert r.code == 0, r.err
    assert status(cli, "INV-10")["invoice"]["balance"] == "900"
    r = cli("refund", "PAY-1", "--yes")
    assert r.code == 0, r.err
    assert [x.amount for x in stripe_refunds(stripe_client, pi.id)] == [600, 400]
    view = assert_consistent(cli, stripe_client, "PAY-1")
    assert (view["payment"]["status"], view["payment"]["refunded"]) == ("refunded", "1000")
    inv = status(cli, "INV-10")["invoice"]
    assert (inv["balance"], inv["status"]) == ("1500", "unpaid")


def test_kwd_amounts_in_stripe_steps(ready: Any, stripe_client: Any) -> None:
    cli = ready
    collect(cli, "INV-11", "--manual-capture", "--amount", "10.000")
    r = cli("capture", "PAY-1", "--yes")  # all of it
    assert r.code == 0, r.err
    pi = pi_of(cli, "PAY-1")
    assert stripe_client.v1.payment_intents.retrieve(pi).amount_received == 10000
    inv = status(cli, "INV-11")["invoice"]
    assert (inv["balance"], inv["status"]) == ("0.250", "partially_paid")
    snap, before = cli.snapshot(), stripe_state(stripe_client)
    for bad in ("1.005", "0.001", "1.0001"):
        r = cli("refund", "PAY-1", "--amount", bad, "--yes")
        assert r.code == 2, (bad, r.err)
        error_line(r.err)
    assert cli.snapshot() == snap and stripe_state(stripe_client) == before
    r = cli("refund", "PAY-1", "--amount", "2.750", "--yes")
    assert r.code == 0, r.err
    view = assert_consistent(cli, stripe_client, "PAY-1")
    assert (view["payment"]["status"], view["payment"]["refunded"]) == ("partially_refunded", "2.750")
    assert status(cli, "INV-11")["invoice"]["balance"] == "3.000"
    # all that is open (3.000) charged in one go, then refunded in full
    assert collect(cli, "INV-11")["payment"]["amount"] == "3.000"
    assert status(cli, "INV-11")["invoice"]["status"] == "paid"
    assert cli("refund", "PAY-2", "--yes").code == 0
    assert status(cli, "INV-11")["invoice"]["balance"] == "3.000"
    assert_consistent(cli, stripe_client, "PAY-2")


def test_void_then_every_other_move_is_refused(ready: Any, stripe_client: Any) -> None:
    cli = ready
    collect(cli, "INV-12", "--manual-capture")
    r = cli("void", "PAY-1", "--note", "customer cancelled", "--yes", "--json")
    assert r.code == 0, r.err
    out = r.json()
    assert out["payment"]["status"] == "canceled"
    assert (out["invoice"]["balance"], out["invoice"]["status"]) == ("100.00", "unpaid")
    pi = stripe_client.v1.payment_intents.retrieve(pi_of(cli, "PAY-1"))
    assert pi.status == "canceled"
    snap, before = cli.snapshot(), stripe_state(stripe_client)
    for args in (("void", "PAY-1"), ("capture", "PAY-1"), ("refund", "PAY-1")):
        r = cli(*args, "--yes")
        assert r.code == 4, (args, r.err)
        assert "PAY-1" in error_line(r.err)
    assert cli.snapshot() == snap and stripe_state(stripe_client) == before
    # the authorization is gone, so the invoice can be charged again
    assert collect(cli, "INV-12")["invoice"]["status"] == "paid"


def test_capture_full_then_refund(ready: Any, stripe_client: Any) -> None:
    cli = ready
    collect(cli, "INV-9", "--manual-capture", "--amount", "50.00")
    r = cli("capture", "PAY-1", "--yes")
    assert r.code == 0, r.err
    assert "Captured 50.00 USD on PAY-1" in r.out
    inv = status(cli, "INV-9")["invoice"]
    assert (inv["balance"], inv["status"]) == ("70.00", "partially_paid")
    assert cli("refund", "PAY-1", "--amount", "10.00", "--yes").code == 0
    view = assert_consistent(cli, stripe_client, "PAY-1")
    assert view["payment"]["status"] == "partially_refunded"
    assert status(cli, "INV-9")["invoice"]["balance"] == "80.00"


# -- confirmations, dry runs, keys -----------------------------------------------------------


MOVES = {
    "refund": ("refund", "PAY-1"),
    "refund-partial": ("refund", "PAY-1", "--amount", "5.00", "--reason", "fraudulent"),
    "capture": ("capture", "PAY-2"),
    "capture-partial": ("capture", "PAY-2", "--amount", "5.00"),
    "void": ("void", "PAY-2"),
    "collect": ("collect", "INV-10", "--payment-method", "pm_card_visa"),
    "collect-manual": ("collect", "INV-10", "--payment-method", "pm_card_visa", "--manual-capture"),
}


@pytest.fixture
def two_payments(ready: Any) -> Any:
    """PAY-1 paid on INV-9 and PAY-2 authorized on INV-12."""
    collect(ready, "INV-9")
    collect(ready, "INV-12", "--manual-capture")
    return ready


def test_no_confirmation_without_a_terminal(two_payments: Any, stripe_client: Any,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    cli = two_payments
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))  # not a terminal, whatever it holds
    snap, before = cli.snapshot(), stripe_state(stripe_client)
    for name, args in MOVES.items():
        r = cli(*args)
        assert r.code == 4, (name, r.err)
        assert "--yes" in error_line(r.err)
        assert "→" in r.err, (name, r.err)  # the plan was shown before asking
        r = cli(*args, "--json")
        assert r.code == 4, (name, r.err)
        assert r.out == ""
    assert cli.snapshot() == snap
    assert stripe_state(stripe_client) == before


def test_dry_run_changes_nothing(two_payments: Any, stripe_client: Any) -> None:
    cli = two_payments
    snap, before = cli.snapshot(), stripe_state(stripe_client)
    for name, args in MOVES.items():
        r = cli(*args, "--dry-run")
        assert r.code == 0, (name, r.err)
        assert r.out.startswith("Dry run, nothing changed."), (name, r.out)
        r = cli(*args, "--dry-run", "--json")
        assert r.code == 0, (name, r.err)
        out = r.json()
        assert out["dry_run"] is True and out["recovered"] == []
        assert out["plan"]["action"] in ("refund", "capture", "void", "charge", "authorize")
        assert "payment" not in out
    plan = cli("refund", "PAY-1", "--amount", "5.00", "--dry-run", "--json").json()["plan"]
    assert plan == {"action": "refund", "payment_id": "PAY-1", "invoice_id": "INV-9", "amount": "5.00",
                    "currency": "usd", "invoice_balance_before": "0.00", "invoice_balance_after": "5.00",
                    "payment_status_before": "paid", "payment_status_after": "partially_refunded"}
    assert cli.snapshot() == snap
    assert stripe_state(stripe_client) == before


LIVE_KEY = "sk_live_51Hkollrefundsecretsecret00"


@pytest.mark.parametrize("key", [LIVE_KEY, "rk_live_51Hkollrefundsecretsecret00"])
def test_live_key_without_live_is_refused(two_payments: Any, stripe_client: Any,
                                          monkeypatch: pytest.MonkeyPatch, key: str) -> None:
    cli = two_payments
    monkeypatch.setenv("KOLLREFUND_STRIPE__API_KEY", key)
    snap, before = cli.snapshot(), stripe_state(stripe_client)
    for name, args in MOVES.items():
        r = cli(*args, "--yes")
        assert r.code == 4, (name, r.err)
        line = error_line(r.err)
        assert "--live" in line and key not in r.err + r.out and "secret" not in r.err
    # with --live the key reaches Stripe, which does not know it: a configuration error, no secret shown
    r = cli("refund", "PAY-1", "--yes", "--live")
    assert r.code == 3, r.err
    assert key not in r.err and "secretsecret" not in r.err
    assert cli.snapshot() == snap
    assert stripe_state(stripe_client) == before


def test_missing_or_malformed_key_is_a_configuration_error(two_payments: Any, stripe_client: Any,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    cli = two_payments
    snap, before = cli.snapshot(), stripe_state(stripe_client)
    monkeypatch.delenv("KOLLREFUND_STRIPE__API_KEY")
    for name, args in MOVES.items():
        r = cli(*args, "--yes")
        assert r.code == 3, (name, r.err)
        assert "stripe.api_key" in error_line(r.err)
    r = cli("resume")
    assert r.code == 0  # nothing open: resume needs no key
    monkeypatch.setenv("KOLLREFUND_STRIPE__API_KEY", "pk_test_publishable")
    r = cli("refund", "PAY-1", "--yes")
    assert r.code == 3 and "pk_test_publishable" not in r.err
    assert cli.snapshot() == snap
    assert stripe_state(stripe_client) == before


def test_restricted_test_key_works(ready: Any, stripe_client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    cli = ready
    monkeypatch.setenv("KOLLREFUND_STRIPE__API_KEY", "rk_test_kollrefund_restricted")
    collect(cli, "INV-9", "--manual-capture")
    assert cli("capture", "PAY-1", "--amount", "100.00", "--yes").code == 0
    assert cli("refund", "PAY-1", "--amount", "40.00", "--yes").code == 0
    assert_consistent(cli, stripe_client, "PAY-1")


# -- bad input and refused moves: exit code, one line, nothing changed -------------------------


BAD = [
    # (args, exit code, words the message must hold)
    (("refund", "PAY-1", "--amount", "120.01"), 4, ["120.00", "PAY-1"]),
    (("refund", "PAY-2"), 4, ["PAY-2", "authorized"]),
    (("refund", "PAY-2", "--amount", "10.00"), 4, ["PAY-2", "authorized"]),
    (("capture", "PAY-1"), 4, ["PAY-1", "paid"]),
    (("capture", "PAY-2", "--amount", "100.01"), 4, ["PAY-2"]),
    (("void", "PAY-1"), 4, ["PAY-1", "paid"]),
    (("collect", "INV-9", "--payment-method", "pm_card_visa"), 4, ["INV-9"]),
    (("collect", "INV-10", "--payment-method", "pm_card_visa", "--amount", "1501"), 4, ["INV-10"]),
    (("collect", "INV-12", "--payment-method", "pm_card_visa", "--amount", "1.00"), 4, ["INV-12"]),
    (("refund", "PAY-1", "--amount", "-5"), 2, ["-5"]),
    (("refund", "PAY-1", "--amount", "0"), 2, ["0"]),
    (("refund", "PAY-1", "--amount", "0.00"), 2, ["0.00"]),
    (("refund", "PAY-1", "--amount", "abc"), 2, ["abc"]),
    (("refund", "PAY-1", "--amount", "10.001"), 2, ["10.001"]),
    (("refund", "PAY-1", "--amount", "NaN"), 2, []),
    (("refund", "PAY-1", "--amount", ""), 2, []),
    (("capture", "PAY-2", "--amount", "-5"), 2, ["-5"]),
    (("capture", "PAY-2", "--amount", "0"), 2, []),
    (("capture", "PAY-2", "--amount", "abc"), 2, ["abc"]),
    (("capture", "PAY-2", "--amount", "10.001"), 2, ["10.001"]),
    (("collect", "INV-10", "--payment-method", "pm_card_visa", "--amount", "10.5"), 2, ["10.5"]),
    (("collect", "INV-10", "--payment-method", "pm_card_visa", "--amount", "-5"), 2, []),
    (("collect", "INV-10", "--payment-method", "card_visa"), 2, ["pm_"]),
    (("collect", "INV-10"), 2, ["--payment-method"]),
    (("refund", "PAY-1", "--reason", "changed_mind"), 2, ["changed_mind"]),
    (("refund", "PAY-999"), 2, ["PAY-999"]),
    (("capture", "PAY-999"), 2, ["PAY-999"]),
    (("void", "PAY-999"), 2, ["PAY-999"]),
    (("collect", "INV-999", "--payment-method", "pm_card_visa"), 2, ["INV-999"]),
    (("refund", "PAY-1", "--bogus"), 2, ["--bogus"]),
]


def test_every_bad_input_changes_nothing(two_payments: Any, stripe_client: Any) -> None:
    cli = two_payments
    snap, before = cli.snapshot(), stripe_state(stripe_client)
    failures = []
    for args, code, words in BAD:
        for extra in (("--yes",), ("--dry-run", "--json")):
            r = cli(*args, *extra)
            try:
                assert r.code == code, f"exit {r.code}, wanted {code}: {r.err}"
                line = error_line(r.err)
                for word in words:
                    assert word in line, f"{word!r} not in {line!r}"
                if "--json" in extra:
                    assert r.out == ""
            except AssertionError as exc:
                failures.append(f"{' '.join(args + extra)}: {exc}")
    assert not failures, "\n".join(failures)
    assert cli.snapshot() == snap
    assert stripe_state(stripe_client) == before


def test_declines_record_a_failed_payment(ready: Any, stripe_client: Any) -> None:
    cli = ready
    for pm, decline in (("pm_card_chargeDeclined", "generic_decline"),
                        ("pm_card_chargeDeclinedInsufficientFunds", "insufficient_funds")):
        r = cli("collect", "INV-9", "--payment-method", pm, "--yes")
        assert r.code == 5, r.err
        line = error_line(r.err)
        assert decline in line and "declined" in line
    view = status(cli, "INV-9")
    assert (view["invoice"]["balance"], view["invoice"]["status"]) == ("120.00", "unpaid")
    assert [(p["id"], p["status"], p["captured"]) for p in view["payments"]] == [
        ("PAY-1", "failed", "0.00"), ("PAY-2", "failed", "0.00")]
    assert [p.status for p in stripe_pis(stripe_client)] == ["requires_payment_method"] * 2
    # the local record points at the PaymentIntent Stripe kept for each declined charge
    assert {p["psp_reference"] for p in view["payments"]} == {pi.id for pi in stripe_pis(stripe_client)}
    # a failed payment moves no more money; the invoice can still be paid with another card
    for args in (("refund", "PAY-1"), ("capture", "PAY-1"), ("void", "PAY-1")):
        assert cli(*args, "--yes").code == 4, args
    assert collect(cli, "INV-9")["invoice"]["status"] == "paid"
    r = cli("collect", "INV-10", "--payment-method", "pm_card_chargeDeclined", "--manual-capture", "--yes")
    assert r.code == 5 and "generic_decline" in r.err
    assert cli("resume", "--dry-run", "--json").json()["open"] == []


# -- exactly once: stale cache, lost responses, retries, the 24-hour window ----------------------


def test_stale_cache_after_a_dashboard_refund(ready: Any, stripe_client: Any) -> None:
    cli = ready
    collect(cli, "INV-9")
    pi = pi_of(cli, "PAY-1")
    outside = stripe_client.v1.refunds.create(params={"payment_intent": pi, "amount": 3000})
    r = cli("refund", "PAY-1", "--yes")
    assert r.code == 4, r.err
    line = error_line(r.err)
    assert "PAY-1" in line and "30.00" in line
    assert [x.id for x in stripe_refunds(stripe_client, pi)] == [outside.id]  # no over-refund
    view = status(cli, "PAY-1")
    [rf] = view["refunds"]
    assert (rf["id"], rf["psp_reference"], rf["amount"], rf["status"]) == ("RF-1", outside.id, "30.00", "succeeded")
    assert (view["payment"]["status"], view["payment"]["refunded"]) == ("partially_refunded", "30.00")
    assert status(cli, "INV-9")["invoice"]["balance"] == "30.00"
    # the dry run of a stale cache changes nothing and says so
    outside2 = stripe_client.v1.refunds.create(params={"payment_intent": pi, "amount": 1000})
    snap = cli.snapshot()
    r = cli("refund", "PAY-1", "--dry-run")
    assert r.code == 4 and cli.snapshot() == snap
    r = cli("refund", "PAY-1", "--yes")
    assert r.code == 4
    assert status(cli, "PAY-1")["refunds"][1]["psp_reference"] == outside2.id
    # run again for what remains
    r = cli("refund", "PAY-1", "--yes", "--json")
    assert r.code == 0, r.err
    assert r.json()["plan"]["amount"] == "80.00"
    assert sum(x.amount for x in stripe_refunds(stripe_client, pi)) == 12000
    view = assert_consistent(cli, stripe_client, "PAY-1")
    assert [x["id"] for x in view["refunds"]] == ["RF-1", "RF-2", "RF-3"]


def test_stale_cache_after_a_dashboard_capture_or_cancel(ready: Any, stripe_client: Any) -> None:
    cli = ready
    collect(cli, "INV-9", "--manual-capture", "--amount", "60.00")
    collect(cli, "INV-9", "--manual-capture", "--amount", "60.00")
    stripe_client.v1.payment_intents.capture(pi_of(cli, "PAY-1"), params={"amount_to_capture": 2500})
    stripe_client.v1.payment_intents.cancel(pi_of(cli, "PAY-2"))
    r = cli("capture", "PAY-1", "--yes")
    assert r.code == 4 and "PAY-1" in error_line(r.err)
    p = status(cli, "PAY-1")["payment"]
    assert (p["status"], p["captured"]) == ("paid", "25.00")
    r = cli("void", "PAY-2", "--yes")
    assert r.code == 4 and "PAY-2" in error_line(r.err)
    assert status(cli, "PAY-2")["payment"]["status"] == "canceled"
    inv = status(cli, "INV-9")["invoice"]
    assert (inv["balance"], inv["status"]) == ("95.00", "partially_paid")
    assert_consistent(cli, stripe_client, "PAY-1")
    assert cli("refund", "PAY-1", "--yes").code == 0
    assert_consistent(cli, stripe_client, "PAY-1")


def test_error_500_before_stripe_is_retried_by_the_sdk(ready: Any, stripe_client: Any, stripe_env: Any) -> None:
    cli = ready
    sb = stripe_env
    collect(cli, "INV-9")
    pi = pi_of(cli, "PAY-1")
    sb.faults.add(method="POST", path=r"^/v1/refunds$", action="error_500")
    r = cli("refund", "PAY-1", "--amount", "12.00", "--yes")
    assert r.code == 0, r.err
    assert sb.faults.pending() == []
    assert len(stripe_refunds(stripe_client, pi)) == 1
    # a lost answer is also retried by the SDK, with our key: Stripe replays, one refund
    sb.faults.add(method="POST", path=r"^/v1/refunds$", action="drop", times=1)
    assert cli("refund", "PAY-1", "--amount", "12.00", "--yes").code == 0
    assert len(stripe_refunds(stripe_client, pi)) == 2
    # a rate limit is not retried (Stripe sends no Stripe-Should-Retry): exit 6, then the same command again
    sb.faults.add(method="POST", path=r"^/v1/refunds$", action="error_429", times=1)
    r = cli("refund", "PAY-1", "--amount", "12.00", "--yes")
    assert r.code == 6 and "safe to run" in error_line(r.err)
    assert len(stripe_refunds(stripe_client, pi)) == 2
    assert cli("refund", "PAY-1", "--amount", "12.00", "--yes").code == 0
    assert [x.amount for x in stripe_refunds(stripe_client, pi)] == [1200] * 3
    assert_consistent(cli, stripe_client, "PAY-1")


def test_stripe_down_is_exit_6_and_nothing_moved(ready: Any, stripe_client: Any, stripe_env: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    cli = ready
    sb = stripe_env
    monkeypatch.setenv("KOLLREFUND_STRIPE__MAX_NETWORK_RETRIES", "0")
    collect(cli, "INV-9")
    pi = pi_of(cli, "PAY-1")
    sb.faults.add(method="POST", path=r"^/v1/refunds$", action="error_500")
    r = cli("refund", "PAY-1", "--amount", "20.00", "--yes")
    assert r.code == 6, r.err
    assert "safe to run" in error_line(r.err)
    assert stripe_refunds(stripe_client, pi) == []
    sb.expire_idempotency_keys()
    r = cli("refund", "PAY-1", "--amount", "20.00", "--yes", "--json")  # the same command again
    assert r.code == 0, r.err
    assert len(r.json()["recovered"]) == 1
    assert [x.amount for x in stripe_refunds(stripe_client, pi)] == [2000]
    assert_consistent(cli, stripe_client, "PAY-1")


def test_lost_response_then_the_same_command_again(ready: Any, stripe_client: Any, stripe_env: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    cli = ready
    sb = stripe_env
    monkeypatch.setenv("KOLLREFUND_STRIPE__MAX_NETWORK_RETRIES", "0")  # every answer lost, retries too
    collect(cli, "INV-9")
    pi = pi_of(cli, "PAY-1")
    sb.faults.add(method="POST", path=r"^/v1/refunds$", action="drop")
    r = cli("refund", "PAY-1", "--amount", "20.00", "--yes")
    assert r.code == 6, r.err
    assert "safe to run" in error_line(r.err)
    [committed] = stripe_refunds(stripe_client, pi)  # Stripe did it; we did not hear
    p = status(cli, "PAY-1")
    assert p["refunds"][0]["status"] == "pending"
    assert cli("resume", "--dry-run", "--json").json()["open"][0]["refund_id"] == "RF-1"
    r = cli("refund", "PAY-1", "--amount", "20.00", "--yes", "--json")
    assert r.code == 0, r.err
    out = r.json()
    assert out["refund_id"] == "RF-1" and "RF-1" in out["recovered"][0] and out["rerun"] is True
    assert out["plan"]["amount"] == "20.00" and out["plan"]["invoice_balance_after"] == "20.00"
    assert [x.id for x in stripe_refunds(stripe_client, pi)] == [committed.id]
    view = assert_consistent(cli, stripe_client, "PAY-1")
    assert (view["payment"]["refunded"], view["payment"]["updated_at"]) == ("20.00", stripe_time(committed.created))
    # and now a second refund of the same amount is a new, deliberate one
    assert cli("refund", "PAY-1", "--amount", "20.00", "--yes").code == 0
    assert len(stripe_refunds(stripe_client, pi)) == 2


def test_lost_response_found_by_metadata_after_the_key_window(ready: Any, stripe_client: Any, stripe_env: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    cli = ready
    sb = stripe_env
    monkeypatch.setenv("KOLLREFUND_STRIPE__MAX_NETWORK_RETRIES", "0")  # every answer lost, retries too
    collect(cli, "INV-9")
    pi = pi_of(cli, "PAY-1")
    sb.faults.add(method="POST", path=r"^/v1/refunds$", action="drop")
    assert cli("refund", "PAY-1", "--yes").code == 6
    sb.expire_idempotency_keys()  # 24 hours later: a resend with the same key would refund again
    r = cli("resume")
    assert r.code == 0, r.err
    assert "RF-1" in r.out and "metadata" in r.out
    assert len(stripe_refunds(stripe_client, pi)) == 1
    assert_consistent(cli, stripe_client, "PAY-1")
    assert cli("resume").out.strip() == "Nothing to resume."


def test_lost_collect_found_by_metadata_after_the_key_window(ready: Any, stripe_client: Any, stripe_env: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    cli = ready
    sb = stripe_env
    monkeypatch.setenv("KOLLREFUND_STRIPE__MAX_NETWORK_RETRIES", "0")  # every answer lost, retries too
    sb.faults.add(method="POST", path=r"^/v1/payment_intents$", action="drop")
    r = cli("collect", "INV-9", "--payment-method", "pm_card_visa", "--amount", "70.00", "--yes")
    assert r.code == 6, r.err
    assert "safe to run" in error_line(r.err)
    [pi] = stripe_pis(stripe_client)
    assert status(cli, "PAY-1")["payment"]["status"] == "pending"
    sb.expire_idempotency_keys()
    r = cli("collect", "INV-9", "--payment-method", "pm_card_visa", "--amount", "70.00", "--yes", "--json")
    assert r.code == 0, r.err
    assert r.json()["payment"]["id"] == "PAY-1"
    assert [p.id for p in stripe_pis(stripe_client)] == [pi.id]
    view = assert_consistent(cli, stripe_client, "PAY-1")
    assert (view["payment"]["status"], view["payment"]["psp_reference"]) == ("paid", pi.id)
    assert status(cli, "INV-9")["invoice"]["balance"] == "50.00"


def test_lost_capture_then_the_same_command_again(ready: Any, stripe_client: Any, stripe_env: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    cli = ready
    sb = stripe_env
    monkeypatch.setenv("KOLLREFUND_STRIPE__MAX_NETWORK_RETRIES", "0")  # every answer lost, retries too
    collect(cli, "INV-9", "--manual-capture")
    pi = pi_of(cli, "PAY-1")
    sb.faults.add(method="POST", path=r"/capture$", action="drop")
    r = cli("capture", "PAY-1", "--amount", "80.00", "--yes")
    assert r.code == 6, r.err
    r = cli("capture", "PAY-1", "--amount", "80.00", "--yes")
    assert r.code == 0, r.err
    assert "nothing more was moved" in r.out
    assert stripe_client.v1.payment_intents.retrieve(pi).amount_received == 8000
    view = assert_consistent(cli, stripe_client, "PAY-1")
    assert (view["payment"]["status"], view["payment"]["captured"]) == ("paid", "80.00")
    assert status(cli, "INV-9")["invoice"]["balance"] == "40.00"


def test_failed_refund_in_stripe_is_taken_back_on_the_next_move(ready: Any, stripe_client: Any,
                                                                stripe_env: Any) -> None:
    cli = ready
    sb = stripe_env
    collect(cli, "INV-9")
    assert cli("refund", "PAY-1", "--amount", "50.00", "--yes").code == 0
    [sr] = stripe_refunds(stripe_client, pi_of(cli, "PAY-1"))
    sb.fail_refund(sr.id, "expired_or_canceled_card")
    r = cli("refund", "PAY-1", "--amount", "100.00", "--yes")
    assert r.code == 4, r.err  # stale: Stripe says nothing is refunded now
    view = status(cli, "PAY-1")
    assert view["refunds"][0]["status"] == "failed" and view["payment"]["refunded"] == "0.00"
    assert cli("refund", "PAY-1", "--amount", "100.00", "--yes").code == 0
    assert_consistent(cli, stripe_client, "PAY-1")


def test_resume_with_nothing_open(ready: Any) -> None:
    r = ready("resume")
    assert (r.code, r.out.strip()) == (0, "Nothing to resume.")
    r = ready("resume", "--json")
    assert r.json() == {"dry_run": False, "recovered": []}
    r = ready("resume", "--dry-run", "--json")
    assert r.json() == {"dry_run": True, "open": []}


def test_a_resend_while_the_first_attempt_is_still_in_stripe(ready: Any, stripe_client: Any, stripe_env: Any,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Stripe answers 409 idempotency_key_in_use: the outcome is unknown (6), never a failed refund (5)."""
    cli, sb = ready, stripe_env
    monkeypatch.setenv("KOLLREFUND_STRIPE__MAX_NETWORK_RETRIES", "0")
    collect(cli, "INV-9")
    pi = pi_of(cli, "PAY-1")
    sb.faults.add(method="POST", path=r"^/v1/refunds$", action="error_500")
    assert cli("refund", "PAY-1", "--amount", "20.00", "--yes").code == 6  # the intent stays open
    with Store.open(cli.cache, readonly=True) as store:
        [intent] = store.open_intents("PAY-1")
    # the first attempt of that intent is still executing in Stripe (a slow network, a dead client)
    sb.faults.add(method="POST", path=r"^/v1/refunds$", action="stall")
    first: list[Any] = []
    worker = threading.Thread(target=lambda: first.append(stripe_client.v1.refunds.create(
        params={"payment_intent": pi, "amount": 2000, "metadata": {"kollrefund_refund_id": "RF-1"}},
        options={"idempotency_key": intent.idempotency_key})))
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while sb.faults.held_count == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        snap = cli.snapshot()
        r = cli("refund", "PAY-1", "--amount", "20.00", "--yes")
        assert r.code == 6, r.err
        assert "safe to run" in error_line(r.err)
        assert cli.snapshot() == snap  # RF-1 still pending, its intent still open
    finally:
        sb.faults.release_held()
        worker.join(10)
    assert first and first[0].status == "succeeded"
    r = cli("refund", "PAY-1", "--amount", "20.00", "--yes", "--json")
    assert r.code == 0, r.err
    assert r.json()["refund_id"] == "RF-1"
    assert [x.id for x in stripe_refunds(stripe_client, pi)] == [first[0].id]
    assert_consistent(cli, stripe_client, "PAY-1")
