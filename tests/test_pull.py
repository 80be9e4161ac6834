"""`kollrefund pull` (NetSuite SuiteQL → cache) and `payments --expiring` (issue 5).

Pull runs against a fresh local NetSuite per test; every invoice NetSuite holds is
created through the sandbox's test API (as someone would in the NetSuite UI), and the
cache is read back through `status`/`invoices --json` and compared whole (snapshot).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from netsuite_fixtures import CUSTOMER, add_invoices, import_payments
from reconcile_support import collect, js, ns, ns_env, ok, one_error, pi_of, sqlite_on, status, world_stripe

from kollrefund.sandbox.netsuite_sandbox import NetSuiteSandbox

__all__ = ["ns", "ns_env", "world_stripe"]  # fixtures, re-exported for pytest

SUITEQL = "POST /services/rest/query/v1/suiteql"


def invoices(cli: Any) -> dict[str, dict[str, Any]]:
    return {i["id"]: i for i in js(cli, "invoices")["invoices"]}


def in_both(cli: Any, ns: NetSuiteSandbox, *invoices: tuple[str, str]) -> dict[str, str]:
    """Each (id, total) in NetSuite (customer "Acme") and imported into the cache with its NetSuite ids."""
    ids = {}
    for inv_id, _total in invoices:
        ids[inv_id] = ns.add_invoice(external_id=inv_id, customer_id=CUSTOMER, customer_name="Acme", total=_total)
    lines = ["id,customer,currency,total,netsuite_id,customer_netsuite_id"]
    lines += [f"{i},Acme,usd,{t},{ids[i]},{CUSTOMER}" for i, t in invoices]
    ok(cli("import", str(cli.write("both.csv", "\n".join(lines) + "\n"))))
    return ids


def pull(cli: Any, *extra: str) -> Any:
    return js(cli, "pull", "--yes", *extra)


def suiteql_calls(ns: NetSuiteSandbox) -> int:
    return sum(n for key, n in ns.stats.requests.items() if key.startswith(SUITEQL))


# -- loading -------------------------------------------------------------------------------------


def test_pull_loads_open_invoices_with_customer_currency_and_total(cli: Any, ns_env: NetSuiteSandbox) -> None:
    ns = ns_env
    ids = {
        "INV-1": ns.add_invoice(external_id="INV-1", customer_id="7", customer_name="Acme Corp", total="120.00"),
        "INV-2": ns.add_invoice(external_id="INV-2", customer_id="8", customer_name="Globex", total="1500",
                                currency="JPY"),
        "INV-3": ns.add_invoice(external_id="INV-3", customer_id="9", customer_name="Initech", total="10.250",
                                currency="KWD"),
    }
    # a dry run says what it would add and writes nothing
    before = cli.snapshot()
    report = js(cli, "pull", "--dry-run")
    assert report["dry_run"] is True and sorted(report["added"]) == sorted(ids)
    assert cli.snapshot() == before
    # no terminal and no --yes: refused, nothing written
    r = cli("pull")
    assert r.code == 4 and all(rows == [] for rows in cli.snapshot().values())

    report = pull(cli)
    assert set(report) == {"dry_run", "added", "updated", "unchanged", "conflicts", "notes"}
    assert sorted(report["added"]) == sorted(ids) and report["conflicts"] == [] and report["updated"] == []
    got = invoices(cli)
    want = {
        "INV-1": ("Acme Corp", "usd", "120.00", "7"),
        "INV-2": ("Globex", "jpy", "1500", "8"),
        "INV-3": ("Initech", "kwd", "10.250", "9"),
    }
    for inv_id, (customer, currency, total, customer_nid) in want.items():
        inv = got[inv_id]
        assert (inv["customer"], inv["currency"], inv["total"], inv["balance"], inv["status"]) == (
            customer, currency, total, total, "unpaid")
        assert inv["netsuite"]["id"] == ids[inv_id]
        with sqlite_on(cli.cache) as con:
            [(nid, cnid)] = con.execute("SELECT netsuite_id, customer_netsuite_id FROM invoices WHERE id = ?",
                                        (inv_id,)).fetchall()
        assert (nid, cnid) == (ids[inv_id], customer_nid)
    # the audit trail says who pulled what
    log = js(cli, "log", "INV-2")["entries"]
    assert [(e["action"], e["operator"], e["netsuite_ref"]) for e in log] == [
        ("invoice.pulled", "tester", ids["INV-2"])]

    # pulling again changes nothing at all
    before = cli.snapshot()
    report = pull(cli)
    assert (report["added"], report["updated"], report["unchanged"]) == ([], [], 3)
    assert cli.snapshot() == before


def test_pull_pages_through_more_invoices_than_one_page_holds(cli: Any, ns_env: NetSuiteSandbox) -> None:
    ns = ns_env
    count = 1005  # NetSuite pages hold at most 1000 rows
    for n in range(1, count + 1):
        ns.add_invoice(external_id=f"INV-{n}", customer_id=CUSTOMER, total=f"{n}.00")
    ns.reset_stats()
    report = pull(cli)
    assert len(report["added"]) == count
    assert suiteql_calls(ns) == 2
    got = invoices(cli)
    assert len(got) == count
    assert got["INV-1"]["total"] == "1.00" and got[f"INV-{count}"]["total"] == f"{count}.00"
    assert got["INV-1000"]["total"] == "1000.00" and got["INV-1001"]["total"] == "1001.00"
    before = cli.snapshot()
    report = pull(cli)
    assert report["unchanged"] == count and report["added"] == report["updated"] == []
    assert cli.snapshot() == before


def test_pull_skips_invoices_not_open_in_netsuite(cli: Any, ns_env: NetSuiteSandbox) -> None:
    ns = ns_env
    nids = add_invoices(cli, ns, ("INV-9", "120.00"), ("INV-12", "100.00"))
    import_payments(cli, ("PAY-1", "INV-9", "120.00"))
    ok(cli("sync", "--yes"))
    assert ns.get("invoice", nids["INV-9"])["status"]["refName"] == "Paid In Full"
    ns.add_invoice(external_id="INV-20", customer_id=CUSTOMER, total="5.00")
    report = pull(cli)
    assert report["added"] == ["INV-20"] and report["conflicts"] == []
    assert "INV-9" not in report["updated"]
    assert invoices(cli)["INV-9"]["status"] == "paid"


def test_pull_since_only_reads_invoices_changed_since(cli: Any, ns_env: NetSuiteSandbox) -> None:
    ns = ns_env
    ns.add_invoice(external_id="INV-1", customer_id=CUSTOMER, total="10.00")
    tomorrow = (datetime.now(UTC) + timedelta(days=2)).date().isoformat()
    report = pull(cli, "--since", tomorrow)
    assert report["added"] == [] and invoices(cli) == {}
    report = pull(cli, "--since", "2020-01-01")
    assert report["added"] == ["INV-1"]


def test_pull_matches_an_invoice_already_cached_under_another_id(cli: Any, ns_env: NetSuiteSandbox) -> None:
    """INV-9 was imported from a CSV with its netsuite_id; NetSuite calls it INV0104: one invoice, not two."""
    ns = ns_env
    nid = ns.add_invoice(external_id="INV0104", customer_id=CUSTOMER, customer_name="Acme", total="120.00")
    ns.edit_invoice(nid, externalId=None)  # made in the NetSuite UI: a document number, no external id
    lines = f"id,customer,currency,total,netsuite_id,customer_netsuite_id\nINV-9,Acme,usd,120.00,{nid},{CUSTOMER}\n"
    ok(cli("import", str(cli.write("inv.csv", lines))))
    before = cli.snapshot()
    report = pull(cli)
    assert (report["added"], report["updated"], report["unchanged"]) == ([], [], 1), report
    assert list(invoices(cli)) == ["INV-9"] and cli.snapshot() == before
    # NetSuite changes its total: the change reaches INV-9
    ns.edit_invoice(nid, total="130.00")
    assert pull(cli)["updated"] == ["INV-9"]
    assert invoices(cli)["INV-9"]["total"] == "130.00"


def test_pull_does_not_repoint_an_invoice_to_another_netsuite_record(cli: Any, ns_env: NetSuiteSandbox) -> None:
    ns = ns_env
    other = ns.add_invoice(external_id="INV-7", customer_id=CUSTOMER, total="50.00")
    ns.add_invoice(external_id="INV-9", customer_id=CUSTOMER, total="120.00")
    lines = f"id,customer,currency,total,netsuite_id,customer_netsuite_id\nINV-9,Acme,usd,120.00,{other},{CUSTOMER}\n"
    ok(cli("import", str(cli.write("inv.csv", lines))))
    before = cli.snapshot()
    report = js(cli, "pull", "--yes", "--dry-run")
    assert any("INV-9" in c for c in report["conflicts"]), report
    report = pull(cli)
    assert report["added"] == report["updated"] == [], report
    assert len([c for c in report["conflicts"] if "INV-9" in c]) == 2, report
    assert status(cli, "INV-9")["invoice"]["netsuite"]["id"] == other
    assert cli.snapshot() == before


def test_pull_does_not_load_an_invoice_paid_in_part_outside_kollrefund(cli: Any, ns_env: NetSuiteSandbox) -> None:
    """NetSuite says 50.00 of 120.00 is still owed: loading it as 120.00 unpaid would let collect overcharge."""
    ns = ns_env
    nid = ns.add_invoice(external_id="INV-5", customer_id=CUSTOMER, total="120.00")
    ns.store.create("customerPayment", {
        "externalId": "OUTSIDE-1", "customer": {"id": CUSTOMER}, "currency": "USD", "payment": Decimal("70.00"),
        "account": {"id": "1"}, "apply": {"items": [{"doc": {"id": nid}, "apply": True, "amount": Decimal("70.00")}]},
    })
    assert Decimal(str(ns.get("invoice", nid)["amountRemaining"])) == Decimal("50.00")
    report = pull(cli)
    assert report["added"] == [] and any("INV-5" in c and "50.00" in c for c in report["conflicts"]), report
    assert all(rows == [] for rows in cli.snapshot().values())


# -- changes in NetSuite --------------------------------------------------------------------------


def test_a_total_changed_in_netsuite_is_updated_or_reported_as_a_conflict(cli: Any, ns_env: NetSuiteSandbox) -> None:
    ns = ns_env
    nids = in_both(cli, ns, ("INV-9", "120.00"), ("INV-12", "100.00"), ("INV-13", "80.00"))
    import_payments(cli, ("PAY-1", "INV-9", "50.00"))
    ok(cli("sync", "--yes"))
    import_payments(cli, ("PAY-2", "INV-12", "60.00"))  # paid here; NetSuite has not heard of it yet
    before = cli.snapshot()
    assert pull(cli)["unchanged"] == 3
    assert cli.snapshot() == before

    ns.edit_invoice(nids["INV-9"], total="150.00")   # above what was paid: taken, balance follows
    ns.edit_invoice(nids["INV-12"], total="40.00")   # below the 60.00 paid here: a conflict, not written
    assert ns.get("invoice", nids["INV-12"])["amountRemaining"] == 40  # still open in NetSuite
    ns.edit_invoice(nids["INV-13"], customer={"id": CUSTOMER, "refName": "Acme Holdings"})
    report = js(cli, "pull", "--dry-run")
    assert cli.snapshot() == before
    report = pull(cli)
    assert sorted(report["updated"]) == ["INV-13", "INV-9"], report
    [conflict] = report["conflicts"]
    assert "INV-12" in conflict and "40.00" in conflict
    got = invoices(cli)
    assert (got["INV-9"]["total"], got["INV-9"]["balance"], got["INV-9"]["status"]) == ("150.00", "100.00",
                                                                                       "partially_paid")
    assert (got["INV-12"]["total"], got["INV-12"]["balance"], got["INV-12"]["status"]) == ("100.00", "40.00",
                                                                                          "partially_paid")
    assert got["INV-13"]["customer"] == "Acme Holdings"
    [entry] = [e for e in js(cli, "log", "INV-9")["entries"] if e["action"] == "invoice.pull_update"]
    assert (entry["balance_before"], entry["balance_after"]) == ("70.00", "100.00")
    assert "total 120.00 USD → 150.00 USD" in entry["detail"]["changes"], entry
    # the conflict stays a conflict; nothing else moves
    again = cli.snapshot()
    report = pull(cli)
    assert report["updated"] == [] and len(report["conflicts"]) == 1
    assert cli.snapshot() == again
    # and the table says so
    r = ok(cli("pull", "--yes"))
    assert "conflict" in r.out and "INV-12" in r.out


def test_a_currency_changed_in_netsuite_is_a_conflict(cli: Any, ns_env: NetSuiteSandbox) -> None:
    ns = ns_env
    nids = in_both(cli, ns, ("INV-9", "120.00"))
    ns.edit_invoice(nids["INV-9"], currency="EUR")
    before = cli.snapshot()
    report = pull(cli)
    assert report["updated"] == [] and any("INV-9" in c and "EUR" in c for c in report["conflicts"])
    assert cli.snapshot() == before


# -- bad input ----------------------------------------------------------------------------------------


def test_pull_bad_input_is_exit_2_and_changes_nothing(cli: Any, ns_env: NetSuiteSandbox) -> None:
    ns_env.add_invoice(external_id="INV-1", customer_id=CUSTOMER, total="10.00")
    ok(cli("import", str(cli.write("i.csv", "id,customer,currency,total\nINV-0,Acme,usd,1.00\n"))))
    before = cli.snapshot()
    for since in ("yesterday", "2026-02-30", "", "2026/01/01", "2026-01-01T00:00:00Z"):
        line = one_error(cli("pull", "--since", since, "--yes"))
        assert "date" in line, line
        assert cli.snapshot() == before


def test_pull_without_netsuite_configured_is_exit_3(cli: Any) -> None:
    before = cli.snapshot()
    one_error(cli("pull", "--yes"), code=3)
    assert cli.snapshot() == before


# -- payments --expiring ------------------------------------------------------------------------------


@pytest.mark.slow
def test_expiring_lists_authorizations_near_their_deadline(world_stripe: Any, stripe_client: Any,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    cli = world_stripe
    held = collect(cli, "INV-9", "--manual-capture", "--amount", "60.00")
    collect(cli, "INV-12")  # paid: never listed
    imported = "id,invoice_id,amount,currency,psp_reference,status\nPAY-70,INV-9,10.00,usd,pi_legacy70,authorized\n"
    # an authorization from another tool, imported without a Stripe key (so no deadline from Stripe)
    monkeypatch.delenv("KOLLREFUND_STRIPE__API_KEY")
    ok(cli("import", str(cli.write("auth.csv", imported))))
    monkeypatch.setenv("KOLLREFUND_STRIPE__API_KEY", cli.stripe.api_key)

    pi = stripe_client.v1.payment_intents.retrieve(pi_of(cli, held), params={"expand": ["latest_charge"]})
    charge = pi.latest_charge.to_dict() if pi.latest_charge else {}
    capture_before = ((charge.get("payment_method_details") or {}).get("card") or {}).get("capture_before")

    listed = js(cli, "payments", "--expiring", "--days", "7")["payments"]
    assert sorted(p["id"] for p in listed) == sorted([held, "PAY-70"])
    for p in listed:
        assert p["status"] == "authorized"
        assert set(p) >= {"id", "invoice_id", "amount", "psp_reference", "capture_before", "deadline_source",
                          "days_left"}
        deadline = datetime.strptime(p["capture_before"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        left = (deadline - datetime.now(UTC)).total_seconds() / 86400
        assert abs(Decimal(p["days_left"]) - Decimal(str(left))) < Decimal("0.2")
        assert 0 < left <= 7
    [legacy] = [p for p in listed if p["id"] == "PAY-70"]
    assert legacy["deadline_source"] == "card network window"
    [ours] = [p for p in listed if p["id"] == held]
    if capture_before:
        assert ours["deadline_source"] == "stripe"
        assert ours["capture_before"] == datetime.fromtimestamp(capture_before, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    # a narrower window lists none of them (both were made just now: about 7 days left)
    assert js(cli, "payments", "--expiring", "--days", "5")["payments"] == []
    r = ok(cli("payments", "--expiring", "--days", "7"))
    assert held in r.out and "PAY-70" in r.out
    # captured: no longer listed
    ok(cli("capture", held, "--yes"))
    assert [p["id"] for p in js(cli, "payments", "--expiring", "--days", "7")["payments"]] == ["PAY-70"]


def test_expiring_bad_input_is_exit_2(cli: Any) -> None:
    ok(cli("import", str(cli.write("i.csv", "id,customer,currency,total\nINV-0,Acme,usd,1.00\n"))))
    before = cli.snapshot()
    for args in (("--days", "-1"), ("--days", "x"), ("--days", "1.5"), ("--days", "-1", "--json"),
                 ("--status", "authorized")):
        one_error(cli("payments", "--expiring", *args))
        assert cli.snapshot() == before
