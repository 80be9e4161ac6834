"""`kollrefund reconcile` end to end (issue 5): local ⇄ Stripe ⇄ NetSuite.

Stripe's side is changed directly with the official SDK on the local Stripe (as an
operator in the Dashboard would), or with the sandbox's ``fail_refund``; NetSuite's with
the sandbox's hand edit. Every outcome is read back from the cache, Stripe and NetSuite.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from reconcile_support import (
    by_eid,
    collect,
    drift_of,
    js,
    ns,
    ns_env,
    ns_invoice,
    ok,
    one_error,
    pi_of,
    reconcile,
    refund,
    status,
    world,
    world_stripe,
)

__all__ = ["ns", "ns_env", "world", "world_stripe"]  # fixtures, re-exported for pytest

pytestmark = pytest.mark.slow

REPORT_KEYS = {"fix", "dry_run", "checked_payments", "checked_invoices", "fixes", "drift", "unresolved"}
DRIFT_KEYS = {"record", "what", "local", "stripe", "netsuite", "fixed"}


def sync(cli: Any) -> None:
    ok(cli("sync", "--yes"))


# -- nothing to do ------------------------------------------------------------------------


def test_no_drift_exits_0_with_the_documented_keys(world: Any) -> None:
    cli = world
    pay = collect(cli, "INV-9")
    sync(cli)
    code, report = reconcile(cli)
    assert code == 0
    assert set(report) == REPORT_KEYS
    assert report["drift"] == [] and report["unresolved"] == 0 and report["fixes"] == []
    assert (report["fix"], report["dry_run"]) == (False, False)
    assert report["checked_payments"] == 1 and report["checked_invoices"] == 2
    # the table says the same in words
    r = cli("reconcile")
    assert r.code == 0 and "No drift" in r.out, r.out
    assert status(cli, pay)["payment"]["status"] == "paid"


# -- a refund made outside kollrefund ----------------------------------------------------------


def test_dashboard_refund_is_reported_then_recorded_once(world: Any, stripe_client: Any) -> None:
    cli = world
    pay = collect(cli, "INV-9")
    sync(cli)
    pi = pi_of(cli, pay)
    outside = stripe_client.v1.refunds.create(params={"payment_intent": pi, "amount": 3000})

    # without --fix: reported, exit 8, nothing changed
    before = cli.snapshot()
    code, report = reconcile(cli)
    assert code == 8
    assert report["unresolved"] >= 1 and report["fixes"] == []
    for d in report["drift"]:
        assert set(d) == DRIFT_KEYS and d["fixed"] is False
    missing = [d for d in report["drift"] if outside.id in d["what"]]
    assert len(missing) == 1 and missing[0]["record"] == pay and missing[0]["local"] == "missing"
    assert "30.00" in missing[0]["stripe"]
    refunded = [d for d in drift_of(report, record=pay) if d["what"] == "refunded"]
    assert [(d["local"], d["stripe"]) for d in refunded] == [("0.00 USD", "30.00 USD")]
    assert cli.snapshot() == before
    # the dry run of a fix changes nothing either, and still exits 8
    code, report = reconcile(cli, "--fix", "--dry-run")
    assert code == 8 and report["dry_run"] is True and cli.snapshot() == before
    # a fix needs confirmation: no terminal, no --yes → refused, nothing changed
    r = cli("reconcile", "--fix")
    assert r.code == 4 and cli.snapshot() == before

    # with --fix: recorded as a refund of its own, the invoice balance restored
    code, report = reconcile(cli, "--fix", "--yes")
    assert code == 0, report
    assert report["unresolved"] == 0 and all(d["fixed"] for d in report["drift"])
    assert any(outside.id in line for line in report["fixes"])
    view = status(cli, pay)
    [rf] = view["refunds"]
    assert (rf["psp_reference"], rf["amount"], rf["status"]) == (outside.id, "30.00", "succeeded")
    assert rf["netsuite"]["sync"] == "pending"
    assert (view["payment"]["status"], view["payment"]["refunded"]) == ("partially_refunded", "30.00")
    inv = status(cli, "INV-9")["invoice"]
    assert (inv["balance"], inv["status"]) == ("30.00", "partially_paid")

    # again, and again with an explicit window: nothing new, still one local refund
    for extra in ((), ("--since", "2000-01-01")):
        code, report = reconcile(cli, "--fix", "--yes", *extra)
        assert code == 0 and report["drift"] == [] and report["fixes"] == [], report
    assert [r["id"] for r in status(cli, pay)["refunds"]] == [rf["id"]]

    # NetSuite: one customerRefund for it after sync, however often sync runs
    sync(cli)
    sync(cli)
    refunds = by_eid(cli.ns, "customerRefund")
    assert list(refunds) == [rf["id"]] and len(refunds[rf["id"]]) == 1
    assert ns_invoice(cli.ns, cli.ns_ids["INV-9"]) == ("Open", inv_balance(inv))
    assert status(cli, pay)["refunds"][0]["netsuite"]["sync"] == "synced"
    code, report = reconcile(cli)
    assert code == 0 and report["drift"] == [], report


def inv_balance(inv: dict[str, Any]) -> Any:
    from decimal import Decimal

    return Decimal(inv["balance"])


def test_two_reconciles_at_once_record_a_dashboard_refund_once(world_stripe: Any, stripe_client: Any) -> None:
    from netsuite_fixtures import spawn_cli

    cli = world_stripe
    pays = [collect(cli, "INV-9", "--amount", "60.00"), collect(cli, "INV-9", "--amount", "60.00")]
    for pay in pays:
        stripe_client.v1.refunds.create(params={"payment_intent": pi_of(cli, pay), "amount": 1500})
    procs = [spawn_cli("reconcile", "--fix", "--yes", "--json") for _ in range(2)]
    for proc in procs:
        _out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    for pay in pays:
        assert [r["amount"] for r in status(cli, pay)["refunds"]] == ["15.00"]
    assert status(cli, "INV-9")["invoice"]["balance"] == "30.00"
    code, report = reconcile(cli)
    assert code == 0 and report["drift"] == []


def test_dashboard_refund_of_a_refund_kollrefund_made_is_not_doubled(world: Any, stripe_client: Any) -> None:
    """Our own refund (matched by metadata) and one made outside (by Stripe id) on one payment."""
    cli = world
    pay = collect(cli, "INV-9")
    rf1 = refund(cli, pay, "--amount", "20.00")
    pi = pi_of(cli, pay)
    outside = stripe_client.v1.refunds.create(params={"payment_intent": pi})  # the rest: 100.00
    for _ in range(2):
        code, report = reconcile(cli, "--fix", "--yes")
        assert code == 0, report
    refunds = status(cli, pay)["refunds"]
    assert [(r["id"], r["amount"]) for r in refunds] == [(rf1, "20.00"), (refunds[1]["id"], "100.00")]
    assert refunds[1]["psp_reference"] == outside.id
    p = status(cli, pay)["payment"]
    assert (p["status"], p["refunded"]) == ("refunded", "120.00")
    # SPEC: after a refund the payment's updated_at is the refund's own Stripe time
    assert p["updated_at"] == datetime.fromtimestamp(outside.created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    inv = status(cli, "INV-9")["invoice"]
    assert (inv["balance"], inv["status"]) == ("120.00", "unpaid")


# -- a refund that fails later -----------------------------------------------------------------


def test_failed_refund_reverses_the_balance(world: Any, stripe_client: Any) -> None:
    cli = world
    pay = collect(cli, "INV-9")
    rf = refund(cli, pay, "--amount", "50.00")
    assert status(cli, "INV-9")["invoice"]["balance"] == "50.00"
    re_id = status(cli, pay)["refunds"][0]["psp_reference"]
    cli.stripe.fail_refund(re_id, "expired_or_canceled_card")

    before = cli.snapshot()
    code, report = reconcile(cli)
    assert code == 8 and cli.snapshot() == before
    [d] = [d for d in report["drift"] if d["record"] == rf]
    assert (d["local"], d["stripe"]) == ("succeeded", "failed")

    code, report = reconcile(cli, "--fix", "--yes")
    assert code == 0, report
    view = status(cli, pay)
    assert view["refunds"][0]["status"] == "failed"
    assert (view["payment"]["status"], view["payment"]["refunded"]) == ("paid", "0.00")
    inv = status(cli, "INV-9")["invoice"]
    assert (inv["balance"], inv["status"]) == ("0.00", "paid")
    # exactly once: a second run reverses nothing more
    code, report = reconcile(cli, "--fix", "--yes")
    assert code == 0 and report["drift"] == []
    assert status(cli, "INV-9")["invoice"]["balance"] == "0.00"
    assert status(cli, pay)["payment"]["refunded"] == "0.00"


def days_later(monkeypatch: pytest.MonkeyPatch, days: int) -> None:
    """Reconcile runs ``days`` from now (Stripe's clock cannot move; reconcile's can)."""
    from datetime import timedelta

    from kollrefund import reconcile as module
    from kollrefund.store import now

    monkeypatch.setattr(module, "now", lambda: now() + timedelta(days=days))


def test_refund_that_fails_days_later_is_still_found(world_stripe: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A refund can fail days after it succeeded; nightly runs have moved the cursor on since."""
    cli = world_stripe
    pay = collect(cli, "INV-9")
    refund(cli, pay)
    for day in (0, 5, 10):
        days_later(monkeypatch, day)
        code, _ = reconcile(cli, "--fix", "--yes")
        assert code == 0
    re_id = status(cli, pay)["refunds"][0]["psp_reference"]
    cli.stripe.fail_refund(re_id)
    days_later(monkeypatch, 11)
    code, report = reconcile(cli)
    assert code == 8, report
    code, report = reconcile(cli, "--fix", "--yes")
    assert code == 0, report
    assert status(cli, pay)["refunds"][0]["status"] == "failed"
    inv = status(cli, "INV-9")["invoice"]
    assert (inv["balance"], inv["status"]) == ("0.00", "paid")


def test_drift_left_unfixed_is_found_again_later(world_stripe: Any, stripe_client: Any,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A fix that fails (Stripe unreachable under the lock) must not move the cursor past its drift."""
    from kollrefund import cli as cli_module

    cli = world_stripe
    pay = collect(cli, "INV-9")
    assert reconcile(cli, "--fix", "--yes")[0] == 0
    outside = stripe_client.v1.refunds.create(params={"payment_intent": pi_of(cli, pay), "amount": 2000})
    days_later(monkeypatch, 3)

    def confirm_then_break_stripe(question: str, *, yes: bool) -> None:
        cli.stripe.faults.add("GET", r"/v1/payment_intents/", "error_500", times=10)

    monkeypatch.setenv("KOLLREFUND_STRIPE__MAX_NETWORK_RETRIES", "0")

    real_confirm = cli_module.confirm
    monkeypatch.setattr(cli_module, "confirm", confirm_then_break_stripe)
    before = cli.snapshot()
    r = cli("reconcile", "--fix", "--yes", "--json")
    cli.stripe.faults.clear()
    monkeypatch.setattr(cli_module, "confirm", real_confirm)
    assert r.code == 6, (r.code, r.out, r.err)  # Stripe unreachable: safe to run again
    assert cli.snapshot()["refunds"] == before["refunds"]
    days_later(monkeypatch, 4)
    code, report = reconcile(cli)
    assert code == 8 and any(outside.id in d["what"] for d in report["drift"]), report
    code, report = reconcile(cli, "--fix", "--yes")
    assert code == 0, report
    [rf] = status(cli, pay)["refunds"]
    assert rf["psp_reference"] == outside.id


def test_drift_reconcile_cannot_fix_stays_unresolved(world_stripe: Any, stripe_client: Any,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A payment imported (without a Stripe key) as 120.00 paid that Stripe captured as 100.00."""
    cli = world_stripe
    pi = stripe_client.v1.payment_intents.create(params={
        "amount": 10000, "currency": "usd", "payment_method": "pm_card_visa", "confirm": True,
        "payment_method_types": ["card"]})
    assert pi.status == "succeeded"
    key = cli.stripe.api_key
    monkeypatch.delenv("KOLLREFUND_STRIPE__API_KEY")
    rows = f"id,invoice_id,amount,currency,psp_reference\nPAY-7,INV-9,120.00,usd,{pi.id}\n"
    ok(cli("import", str(cli.write("p.csv", rows))))
    monkeypatch.setenv("KOLLREFUND_STRIPE__API_KEY", key)
    for extra in ((), ("--fix", "--yes")):
        code, report = reconcile(cli, *extra)
        assert code == 8, report
        captured = [d for d in drift_of(report, record="PAY-7") if d["what"] == "captured"]
        assert [(d["local"], d["stripe"], d["fixed"]) for d in captured] == [("120.00 USD", "100.00 USD", False)]
        assert report["unresolved"] >= 1
    # still reported a month on, however far the cursor has moved, until someone resolves it
    for day in (10, 20, 30):
        days_later(monkeypatch, day)
        code, report = reconcile(cli, "--fix", "--yes")
        assert code == 8 and [d["what"] for d in drift_of(report, record="PAY-7")] == ["captured"], report
    assert status(cli, "PAY-7")["payment"]["captured"] == "120.00"


# -- a capture or cancellation made in Stripe --------------------------------------------------


def test_capture_and_cancel_in_stripe_update_the_payments(world: Any, stripe_client: Any) -> None:
    cli = world
    p1 = collect(cli, "INV-9", "--manual-capture", "--amount", "60.00")
    p2 = collect(cli, "INV-9", "--manual-capture", "--amount", "60.00")
    stripe_client.v1.payment_intents.capture(pi_of(cli, p1), params={"amount_to_capture": 2500})
    stripe_client.v1.payment_intents.cancel(pi_of(cli, p2))
    before = cli.snapshot()
    code, report = reconcile(cli)
    assert code == 8 and cli.snapshot() == before
    assert {d["record"] for d in report["drift"]} >= {p1, p2}
    captured = [d for d in drift_of(report, record=p1) if d["what"] == "captured"]
    assert [(d["local"], d["stripe"]) for d in captured] == [("0.00 USD", "25.00 USD")]

    code, report = reconcile(cli, "--fix", "--yes")
    assert code == 0, report
    a, b = status(cli, p1)["payment"], status(cli, p2)["payment"]
    assert (a["status"], a["captured"]) == ("paid", "25.00")
    assert (b["status"], b["captured"]) == ("canceled", "0.00")
    inv = status(cli, "INV-9")["invoice"]
    assert (inv["balance"], inv["status"]) == ("95.00", "partially_paid")
    assert a["netsuite"]["sync"] == "pending"  # the capture is queued for NetSuite
    code, report = reconcile(cli, "--fix", "--yes")
    assert code == 0 and report["drift"] == []
    sync(cli)
    assert ns_invoice(cli.ns, cli.ns_ids["INV-9"]) == ("Open", inv_balance(inv))
    assert list(by_eid(cli.ns, "customerPayment")) == [p1]


# -- NetSuite edited by hand ------------------------------------------------------------------


def test_netsuite_hand_edit_is_drift_and_is_not_overwritten(world: Any) -> None:
    cli = world
    collect(cli, "INV-9")
    sync(cli)
    nid = cli.ns_ids["INV-9"]
    assert ns_invoice(cli.ns, nid) == ("Paid In Full", inv_balance({"balance": "0"}))
    cli.ns.edit_invoice(nid, total="150.00")
    edited = cli.ns.get("invoice", nid)
    before = cli.snapshot()
    for extra in ((), ("--fix", "--yes")):
        code, report = reconcile(cli, *extra)
        assert code == 8, report
        [d] = report["drift"]
        assert d["record"] == "INV-9" and d["fixed"] is False
        assert d["stripe"] is None and "30" in d["netsuite"] and "Open" in d["netsuite"]
        assert "0.00" in d["local"]
    # not overwritten: neither NetSuite nor the cache changed (the cursor aside)
    assert cli.ns.get("invoice", nid) == edited
    after = cli.snapshot()
    assert {k: v for k, v in after.items() if k != "meta"} == {k: v for k, v in before.items() if k != "meta"}
    # and the table shows a NetSuite column
    r = cli("reconcile")
    assert r.code == 8 and "NetSuite" in r.out and "INV-9" in r.out


# -- bad input --------------------------------------------------------------------------------


def test_bad_since_is_exit_2_and_nothing_changed(world_stripe: Any) -> None:
    cli = world_stripe
    collect(cli, "INV-9")
    before = cli.snapshot()
    for since in ("yesterday", "2026-13-01", "2026-02-30", "", "01/11/2026"):
        line = one_error(cli("reconcile", "--since", since, "--fix", "--yes"))
        assert "date" in line
        assert cli.snapshot() == before


def test_reconcile_keeps_stripe_state_when_it_only_reports(world_stripe: Any, stripe_client: Any) -> None:
    cli = world_stripe
    pay = collect(cli, "INV-9")
    js(cli, "status", pay)
    pis = [(p.id, p.status, p.amount_received) for p in stripe_client.v1.payment_intents.list().data]
    code, _ = reconcile(cli)
    assert code == 0
    assert [(p.id, p.status, p.amount_received) for p in stripe_client.v1.payment_intents.list().data] == pis
