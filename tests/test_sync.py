"""`kollrefund sync` end to end against the local NetSuite (issue 4).

Every outcome is checked on the sandbox's own state, not on what kollrefund believes.
Payments made through Stripe (``collect``) where a refund is needed; payments imported
from CSV otherwise (faster). Subprocess and SIGKILL cases are in test_sync_crash.py.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import pytest
from netsuite_fixtures import (
    add_invoices,
    apply_lines,
    assert_no_duplicates,
    by_eid,
    collect,
    import_payments,
    ns,
    ns_env,
    ns_invoice,
    refund,
    spawn_cli,
    status,
    stripe_local,
    stripe_on,
    sync,
)

from kollrefund.sandbox.netsuite_sandbox import NetSuiteSandbox

__all__ = ["ns", "ns_env", "stripe_local", "stripe_on"]  # fixtures, re-exported for pytest


def payment_record(ns: NetSuiteSandbox, pid: str) -> dict[str, Any]:
    recs = by_eid(ns, "customerPayment")[pid]
    assert len(recs) == 1
    return ns.get("customerPayment", recs[0]["id"])


def applied(ns: NetSuiteSandbox, pid: str, invoice_nid: str) -> Decimal:
    lines = [ln for ln in apply_lines(payment_record(ns, pid)) if ln["doc"]["id"] == invoice_nid and ln["apply"]]
    return sum((Decimal(str(ln["amount"])) for ln in lines), Decimal(0))


# -- the seed's story: steps 4 and 8 ----------------------------------------------------


def test_payment_then_full_refund_reads_paid_then_open(cli: Any, ns_env: NetSuiteSandbox, stripe_on: Any) -> None:
    ns = ns_env
    nid = add_invoices(cli, ns, ("INV-9", "120.00"))["INV-9"]
    pay = collect(cli, "INV-9")
    assert status(cli, "INV-9")["invoice"]["netsuite"]["sync"] == "pending"
    assert status(cli, pay)["payment"]["netsuite"] == {"id": None, "sync": "pending"}

    r = sync(cli)
    assert r.code == 0, r.err
    # step 4, on NetSuite's side: the invoice is Paid In Full by one customerPayment PAY-…
    assert ns_invoice(ns, nid) == ("Paid In Full", Decimal("0"))
    payments = by_eid(ns, "customerPayment")
    assert list(payments) == [pay]
    rec = payment_record(ns, pay)
    assert rec["customer"]["id"] == "4" and rec["account"]["id"] == "1"
    assert Decimal(str(rec["payment"])) == Decimal("120.00")
    assert applied(ns, pay, nid) == Decimal("120.00")
    assert status(cli, "INV-9")["invoice"]["netsuite"] == {"id": nid, "sync": "synced"}
    assert status(cli, pay)["payment"]["netsuite"] == {"id": rec["id"], "sync": "synced"}

    rf = refund(cli, pay)
    assert status(cli, pay)["refunds"][0]["netsuite"] == {"id": None, "sync": "pending"}
    r = sync(cli)
    assert r.code == 0, r.err
    # step 8: the invoice is Open with its full amount, the payment still listed, and one
    # customerRefund RF-… applied to it
    assert ns_invoice(ns, nid) == ("Open", Decimal("120.00"))
    assert list(by_eid(ns, "customerPayment")) == [pay]
    refunds = by_eid(ns, "customerRefund")
    assert list(refunds) == [rf]
    ref = ns.get("customerRefund", refunds[rf][0]["id"])
    assert [(ln["doc"]["id"], Decimal(str(ln["amount"]))) for ln in apply_lines(ref) if ln["apply"]] == [
        (rec["id"], Decimal("120.00"))
    ]
    assert ref["account"]["id"] == "2" and ref["paymentMethod"]["id"] == "3" and ref["customer"]["id"] == "4"
    assert applied(ns, pay, nid) == Decimal("0")
    st = status(cli, pay)
    assert st["refunds"][0]["netsuite"] == {"id": ref["id"], "sync": "synced"}
    assert status(cli, "INV-9")["invoice"]["netsuite"]["sync"] == "synced"
    # nothing left: a third run sends nothing
    ns.reset_stats()
    r = sync(cli)
    assert r.code == 0 and ns.stats.total == 0


def test_partial_refund_leaves_the_refunded_amount_open(cli: Any, ns_env: NetSuiteSandbox, stripe_on: Any) -> None:
    ns = ns_env
    nid = add_invoices(cli, ns, ("INV-9", "120.00"))["INV-9"]
    pay = collect(cli, "INV-9")
    assert sync(cli).code == 0
    refund(cli, pay, "--amount", "20.00")
    r = sync(cli)
    assert r.code == 0, r.err
    assert ns_invoice(ns, nid) == ("Open", Decimal("20.00"))
    assert applied(ns, pay, nid) == Decimal("100.00")
    assert len(by_eid(ns, "customerRefund")) == 1


def test_repeated_partial_refunds_of_one_payment(cli: Any, ns_env: NetSuiteSandbox, stripe_on: Any) -> None:
    ns = ns_env
    nid = add_invoices(cli, ns, ("INV-9", "120.00"))["INV-9"]
    pay = collect(cli, "INV-9")
    assert sync(cli).code == 0
    first = refund(cli, pay, "--amount", "20.00")
    assert sync(cli).code == 0
    assert ns_invoice(ns, nid) == ("Open", Decimal("20.00"))
    # two more before the next sync: both go in one run, in order
    second = refund(cli, pay, "--amount", "30.00")
    third = refund(cli, pay, "--amount", "10.00")
    r = sync(cli, "--json")
    assert r.code == 0, r.err
    assert sorted(r.json()["synced"]) == sorted([second, third])
    assert ns_invoice(ns, nid) == ("Open", Decimal("60.00"))
    assert applied(ns, pay, nid) == Decimal("60.00")
    refunds = by_eid(ns, "customerRefund")
    assert sorted(refunds) == sorted([first, second, third])
    assert {k: Decimal(str(v[0]["total"])) for k, v in refunds.items()} == {
        first: Decimal("20.00"), second: Decimal("30.00"), third: Decimal("10.00")}
    assert_no_duplicates(ns)


def test_payment_and_its_refunds_in_one_run(cli: Any, ns_env: NetSuiteSandbox, stripe_on: Any) -> None:
    """The payment was never synced when it was refunded: one run pushes it, then the refunds."""
    ns = ns_env
    nid = add_invoices(cli, ns, ("INV-9", "120.00"))["INV-9"]
    pay = collect(cli, "INV-9")
    refund(cli, pay, "--amount", "20.00")
    refund(cli, pay, "--amount", "100.00")
    r = sync(cli)
    assert r.code == 0, r.out + r.err
    assert ns_invoice(ns, nid) == ("Open", Decimal("120.00"))
    assert len(by_eid(ns, "customerRefund")) == 2 and len(by_eid(ns, "customerPayment")) == 1


def test_refunded_then_paid_again_in_one_run(cli: Any, ns_env: NetSuiteSandbox, stripe_on: Any) -> None:
    """Paid, refunded in full, paid again by another card -- all before the nightly sync.

    The second payment can only be applied once the first is unapplied; one run must
    get the order right and end with the invoice Paid In Full by the second payment.
    """
    ns = ns_env
    nid = add_invoices(cli, ns, ("INV-9", "120.00"))["INV-9"]
    first = collect(cli, "INV-9")
    assert sync(cli).code == 0
    refund(cli, first)
    second = collect(cli, "INV-9")
    r = sync(cli)
    assert r.code == 0, r.out + r.err
    assert ns_invoice(ns, nid) == ("Paid In Full", Decimal("0"))
    assert applied(ns, first, nid) == Decimal("0") and applied(ns, second, nid) == Decimal("120.00")
    # and the same story with nothing synced in between
    nid2 = add_invoices(cli, ns, ("INV-10", "50.00"))["INV-10"]
    a = collect(cli, "INV-10")
    refund(cli, a)
    b = collect(cli, "INV-10")
    r = sync(cli)
    assert r.code == 0, r.out + r.err
    assert ns_invoice(ns, nid2) == ("Paid In Full", Decimal("0"))
    assert applied(ns, a, nid2) == Decimal("0") and applied(ns, b, nid2) == Decimal("50.00")
    assert_no_duplicates(ns)


def test_two_payments_on_one_invoice(cli: Any, ns_env: NetSuiteSandbox) -> None:
    ns = ns_env
    nid = add_invoices(cli, ns, ("INV-9", "120.00"))["INV-9"]
    import_payments(cli, ("PAY-A", "INV-9", "70.00"))
    assert sync(cli).code == 0
    assert ns_invoice(ns, nid) == ("Open", Decimal("50.00"))
    import_payments(cli, ("PAY-B", "INV-9", "50.00"))
    r = sync(cli)
    assert r.code == 0, r.err
    assert ns_invoice(ns, nid) == ("Paid In Full", Decimal("0"))
    assert applied(ns, "PAY-A", nid) == Decimal("70.00") and applied(ns, "PAY-B", nid) == Decimal("50.00")
    assert sorted(by_eid(ns, "customerPayment")) == ["PAY-A", "PAY-B"]


def test_other_currencies_keep_their_minor_units(cli: Any, ns_env: NetSuiteSandbox) -> None:
    ns = ns_env
    jpy = add_invoices(cli, ns, ("INV-J", "1500"), currency="jpy")["INV-J"]
    kwd = add_invoices(cli, ns, ("INV-K", "10.250"), currency="kwd")["INV-K"]
    import_payments(cli, ("PAY-J", "INV-J", "1500"), currency="jpy")
    import_payments(cli, ("PAY-K", "INV-K", "10.250"), currency="kwd")
    assert sync(cli).code == 0
    assert ns_invoice(ns, jpy) == ("Paid In Full", Decimal("0"))
    assert ns_invoice(ns, kwd) == ("Paid In Full", Decimal("0"))
    assert applied(ns, "PAY-K", kwd) == Decimal("10.250")


# -- lost answers, governance, two runs ---------------------------------------------


@pytest.mark.parametrize("target", ["payment", "refund"])
def test_response_dropped_after_commit_then_rerun(cli: Any, ns_env: NetSuiteSandbox, stripe_on: Any,
                                                  monkeypatch: pytest.MonkeyPatch, target: str) -> None:
    """NetSuite commits, the answer is lost (every retry too): pending, and a rerun makes no duplicate."""
    ns = ns_env
    monkeypatch.setenv("KOLLREFUND_NETSUITE__MAX_RETRIES", "1")
    nid = add_invoices(cli, ns, ("INV-9", "120.00"))["INV-9"]
    pay = collect(cli, "INV-9")
    if target == "refund":
        assert sync(cli).code == 0
        rf = refund(cli, pay, "--amount", "20.00")
        ns.faults.add(method="PATCH", path="/customerPayment/", action="drop", times=1)
        ns.faults.add(method="PUT", path="/customerRefund/eid:", action="drop", times=2)
        record, rtype = rf, "customerRefund"
    else:
        ns.faults.add(method="PUT", path="/customerPayment/eid:", action="drop", times=2)
        record, rtype = pay, "customerPayment"
    r = sync(cli, "--json")
    assert r.code == 7, r.out + r.err
    assert record in r.json()["pending"]
    assert len(by_eid(ns, rtype)[record]) == 1  # NetSuite did record it
    st = status(cli, pay)
    sync_state = st["payment"]["netsuite"] if target == "payment" else st["refunds"][0]["netsuite"]
    assert sync_state["sync"] == "pending"

    r = sync(cli)
    assert r.code == 0, r.out + r.err
    assert_no_duplicates(ns)
    assert len(by_eid(ns, "customerPayment")) == 1
    assert len(by_eid(ns, "customerRefund")) == (1 if target == "refund" else 0)
    assert ns_invoice(ns, nid) == (("Open", Decimal("20.00")) if target == "refund" else ("Paid In Full", Decimal(0)))


def test_concurrency_four_times_the_limit(cli: Any, ns_env: NetSuiteSandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    ns = ns_env
    n, limit = 40, 2
    ids = add_invoices(cli, ns, *[(f"INV-{i}", "10.00") for i in range(n)])
    import_payments(cli, *[(f"PAY-{i}", f"INV-{i}", "10.00") for i in range(n)])
    ns.set_concurrency_limit(limit)
    ns.set_latency(15)
    monkeypatch.setenv("KOLLREFUND_NETSUITE__CONCURRENCY", str(4 * limit))
    r = sync(cli, "--json")
    assert r.code == 0, r.out + r.err
    report = r.json()
    assert len(report["synced"]) == n and not report["failed"] and not report["pending"] and not report["drift"]
    assert ns.stats.throttled > 0  # the sandbox did push back
    assert ns.stats.max_in_flight <= limit
    assert sorted(by_eid(ns, "customerPayment")) == sorted(f"PAY-{i}" for i in range(n))
    assert_no_duplicates(ns)
    assert all(ns_invoice(ns, nid) == ("Paid In Full", Decimal(0)) for nid in ids.values())


def test_two_syncs_at_once(cli: Any, ns_env: NetSuiteSandbox) -> None:
    ns = ns_env
    n = 30
    add_invoices(cli, ns, *[(f"INV-{i}", "10.00") for i in range(n)])
    import_payments(cli, *[(f"PAY-{i}", f"INV-{i}", "10.00") for i in range(n)])
    ns.set_latency(20)
    first = spawn_cli("sync", "--yes", "--json")
    deadline = time.monotonic() + 20
    while ns.stats.total == 0 and time.monotonic() < deadline:  # the first is writing
        time.sleep(0.01)
    second = spawn_cli("sync", "--yes", "--json")
    outs = [p.communicate(timeout=60) for p in (first, second)]
    codes = [first.returncode, second.returncode]
    assert codes == [0, 0], outs
    assert_no_duplicates(ns)
    assert len(by_eid(ns, "customerPayment")) == n
    assert ns.stats.count("PUT", "customerPayment") == n  # the second found nothing left to push
    assert all(status(cli, f"PAY-{i}")["payment"]["netsuite"]["sync"] == "synced" for i in range(n))


# -- credentials and configuration --------------------------------------------------


def test_wrong_credentials_then_fixed(cli: Any, ns_env: NetSuiteSandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    ns = ns_env
    add_invoices(cli, ns, ("INV-1", "10.00"), ("INV-2", "20.00"))
    import_payments(cli, ("PAY-1", "INV-1", "10.00"), ("PAY-2", "INV-2", "20.00"))
    wrong = "0" * 64
    monkeypatch.setenv("KOLLREFUND_NETSUITE__TOKEN_SECRET", wrong)
    r = sync(cli)
    assert r.code == 5, r.out + r.err  # refused by NetSuite; nothing marked failed
    assert "refused the credentials" in r.err
    for secret in (ns.consumer_secret, ns.token_secret, wrong):
        assert secret not in r.out and secret not in r.err
    assert "1234567_SB1" in r.out + r.err  # it says which account refused
    assert len(ns.records("customerPayment")) == 0
    for pid in ("PAY-1", "PAY-2"):
        assert status(cli, pid)["payment"]["netsuite"]["sync"] == "pending"
    assert ns.stats.total <= 2  # refused once is enough: no request per record

    monkeypatch.setenv("KOLLREFUND_NETSUITE__TOKEN_SECRET", ns.token_secret)
    r = sync(cli)
    assert r.code == 0, r.out + r.err
    assert sorted(by_eid(ns, "customerPayment")) == ["PAY-1", "PAY-2"]
    for pid in ("PAY-1", "PAY-2"):
        assert status(cli, pid)["payment"]["netsuite"]["sync"] == "synced"


def test_missing_refund_account_fails_the_refund_before_sending(
    cli: Any, ns_env: NetSuiteSandbox, stripe_on: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    ns = ns_env
    add_invoices(cli, ns, ("INV-9", "120.00"), ("INV-10", "30.00"))
    pay = collect(cli, "INV-9")
    rf = refund(cli, pay, "--amount", "20.00")
    other = collect(cli, "INV-10")
    monkeypatch.delenv("KOLLREFUND_NETSUITE__REFUND_ACCOUNT_ID")
    r = sync(cli, "--json")
    assert r.code == 7, r.out + r.err
    report = r.json()
    assert sorted(report["synced"]) == sorted([pay, other])
    assert "netsuite.refund_account_id" in report["failed"][rf]
    assert ns.stats.count("PATCH") == 0 and ns.stats.count("PUT", "customerRefund") == 0
    st = status(cli, pay)["refunds"][0]["netsuite"]
    assert st["sync"] == "failed" and "netsuite.refund_account_id" in st["error"]
    r = sync(cli)
    assert r.code == 7 and "netsuite.refund_account_id" in r.out + r.err

    monkeypatch.setenv("KOLLREFUND_NETSUITE__REFUND_ACCOUNT_ID", "2")
    assert sync(cli).code == 0
    assert status(cli, pay)["refunds"][0]["netsuite"]["sync"] == "synced"
    assert list(by_eid(ns, "customerRefund")) == [rf]


@pytest.mark.parametrize("missing", ["KOLLREFUND_NETSUITE__ACCOUNT_ID", "KOLLREFUND_NETSUITE__CONSUMER_SECRET",
                                     "KOLLREFUND_NETSUITE__TOKEN_ID"])
def test_missing_account_or_credentials_exit_3_nothing_sent(
    cli: Any, ns_env: NetSuiteSandbox, monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    ns = ns_env
    add_invoices(cli, ns, ("INV-1", "10.00"))
    import_payments(cli, ("PAY-1", "INV-1", "10.00"))
    before = cli.snapshot()
    ns.reset_stats()
    monkeypatch.delenv(missing)
    r = sync(cli)
    assert r.code == 3, r.out + r.err
    key = missing.removeprefix("KOLLREFUND_NETSUITE__").lower()
    assert key in r.err
    assert ns.stats.total == 0
    assert cli.snapshot() == before


def test_dry_run_sends_nothing_and_changes_nothing(cli: Any, ns_env: NetSuiteSandbox) -> None:
    ns = ns_env
    nid = add_invoices(cli, ns, ("INV-1", "10.00"))["INV-1"]
    import_payments(cli, ("PAY-1", "INV-1", "10.00"))
    before = cli.snapshot()
    ns.reset_stats()
    r = cli("sync", "--dry-run")
    assert r.code == 0, r.err
    assert "PAY-1" in r.out and "customerPayment/eid:PAY-1" in r.out
    r = cli("sync", "--dry-run", "--json")
    assert r.code == 0
    plan = r.json()["would_push"]
    assert [(p["record"], p["requests"][0]["method"]) for p in plan] == [("PAY-1", "PUT")]
    assert ns.stats.total == 0 and cli.snapshot() == before
    assert ns_invoice(ns, nid) == ("Open", Decimal("10.00"))


# -- status and drift ---------------------------------------------------------------


def test_status_shows_failed_with_netsuites_detail(cli: Any, ns_env: NetSuiteSandbox) -> None:
    """An invoice id NetSuite doesn't know (deleted by hand): that record fails, the rest go on."""
    ns = ns_env
    add_invoices(cli, ns, ("INV-1", "10.00"))
    r = cli("import", str(cli.write("gone.csv", "id,customer,currency,total,netsuite_id,customer_netsuite_id\n"
                                                "INV-GONE,Acme,usd,10.00,99999,4\n")))
    assert r.code == 0, r.err
    import_payments(cli, ("PAY-1", "INV-1", "10.00"), ("PAY-2", "INV-GONE", "10.00"))
    r = sync(cli, "--json")
    assert r.code == 7, r.out + r.err
    assert r.json()["synced"] == ["PAY-1"]
    st = status(cli, "PAY-2")["payment"]["netsuite"]
    assert st["sync"] == "failed"
    assert "99999" in st["error"] and "INVALID_KEY_OR_REF" in st["error"]
    assert status(cli, "INV-GONE")["invoice"]["netsuite"]["sync"] == "failed"
    assert status(cli, "INV-1")["invoice"]["netsuite"]["sync"] == "synced"
    assert list(by_eid(ns, "customerPayment")) == ["PAY-1"]
    r = sync(cli)  # a failed record is tried again, and fails again the same way
    assert r.code == 7 and "PAY-2" in r.out


def test_invoice_edited_in_netsuite_shows_as_drift(cli: Any, ns_env: NetSuiteSandbox) -> None:
    ns = ns_env
    ids = add_invoices(cli, ns, ("INV-1", "100.00"), ("INV-2", "50.00"))
    import_payments(cli, ("PAY-1", "INV-1", "60.00"), ("PAY-2", "INV-2", "50.00"))
    ns.edit_invoice(ids["INV-1"], total="90.00")  # someone changed it by hand
    r = sync(cli, "--json")
    assert r.code == 0, r.out + r.err
    drift = r.json()["drift"]
    assert drift == [{"invoice": "INV-1", "netsuite_status": "Open", "netsuite_amount_remaining": "30.00",
                      "local_status": "partially_paid", "local_balance": "40.00"}]
    import_payments(cli, ("PAY-3", "INV-1", "10.00"))
    r = sync(cli)
    assert r.code == 0
    assert "drift: INV-1 is Open with 20.00 remaining in NetSuite" in r.out


def test_refund_failed_in_stripe_before_sync_is_not_sent_and_everything_is_audited(
    cli: Any, ns_env: NetSuiteSandbox, stripe_on: Any
) -> None:
    ids = add_invoices(cli, ns_env, ("INV-80", "120.00"))
    pid = collect(cli, "INV-80")
    assert sync(cli).code == 0
    rf = refund(cli, pid)
    re_id = status(cli, pid)["refunds"][0]["psp_reference"]
    stripe_on.fail_refund(re_id)
    assert cli("reconcile", "--fix", "--yes").code == 0  # the failure reverses the refund locally
    assert status(cli, pid)["refunds"][0]["status"] == "failed"
    r = sync(cli, "--json")
    assert r.code == 0, r.err
    assert rf not in by_eid(ns_env, "customerRefund")  # nothing to refund in NetSuite
    assert ns_invoice(ns_env, ids["INV-80"]) == ("Paid In Full", Decimal("0"))
    log = cli("log", "--json").json()["entries"]
    synced = [(e["action"], e["subject_id"]) for e in log if e["action"].startswith("netsuite.")]
    assert synced == [("netsuite.payment_synced", pid), ("netsuite.refund_synced", rf)]
    [pay_row] = [e for e in log if e["action"] == "netsuite.payment_synced"]
    assert pay_row["netsuite_ref"] == status(cli, pid)["payment"]["netsuite"]["id"]
    assert pay_row["invoice_id"] == "INV-80"
    assert pay_row["detail"]["requests"] == [f"PUT customerPayment/eid:{pid}"]
    [rf_row] = [e for e in log if e["action"] == "netsuite.refund_synced"]
    assert rf_row["detail"]["requests"] == []  # recorded, not sent


def test_a_refused_record_is_audited_as_failed(cli: Any, ns_env: NetSuiteSandbox) -> None:
    lines = "id,customer,currency,total,netsuite_id,customer_netsuite_id\nINV-81,Acme,usd,50.00,99999,4\n"
    assert cli("import", str(cli.write("inv81.csv", lines))).code == 0
    import_payments(cli, ("PAY-81", "INV-81", "50.00"))
    assert sync(cli).code == 7
    [row] = [e for e in cli("log", "--json").json()["entries"] if e["action"] == "netsuite.payment_failed"]
    assert row["subject_id"] == "PAY-81" and "99999" in row["detail"]["error"]
