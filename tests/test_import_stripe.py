"""import of payments with a Stripe key: checked against the local Stripe, Stripe's truth taken."""

from __future__ import annotations

from typing import Any

from tests.conftest import INVOICES_CSV, Cli

HEADER = "id,invoice_id,amount,currency,psp_reference\n"


def _pi(client: Any, amount: int, currency: str = "usd", *, manual: bool = False) -> Any:
    return client.v1.payment_intents.create({
        "amount": amount, "currency": currency, "payment_method": "pm_card_visa", "confirm": True,
        "payment_method_types": ["card"], "capture_method": "manual" if manual else "automatic",
    })


def test_statuses_and_refunds_come_from_stripe(cli: Cli, stripe_client: Any) -> None:
    assert cli("import", str(cli.write("inv.csv", INVOICES_CSV))).code == 0
    paid = _pi(stripe_client, 12000)
    stripe_client.v1.refunds.create({"payment_intent": paid.id, "amount": 2000, "reason": "duplicate"})
    held = _pi(stripe_client, 1000, "jpy", manual=True)
    text = HEADER + f"PAY-1,INV-9,120.00,usd,{paid.id}\nPAY-2,INV-10,1000,jpy,{held.id}\n"
    r = cli("import", str(cli.write("p.csv", text)), "--json")
    assert r.code == 0, r.err
    one = cli("status", "PAY-1", "--json").json()
    assert one["payment"]["status"] == "partially_refunded"
    assert (one["payment"]["captured"], one["payment"]["refunded"]) == ("120.00", "20.00")
    [refund] = one["refunds"]
    assert refund["amount"] == "20.00" and refund["reason"] == "duplicate" and refund["psp_reference"].startswith("re_")
    assert cli("status", "INV-9", "--json").json()["invoice"]["balance"] == "20.00"
    two = cli("status", "PAY-2", "--json").json()["payment"]
    assert (two["status"], two["captured"]) == ("authorized", "0")
    assert cli("status", "INV-10", "--json").json()["invoice"]["balance"] == "1500"


def test_unknown_reference_or_wrong_amount_fails_the_whole_file(cli: Cli, stripe_client: Any) -> None:
    assert cli("import", str(cli.write("inv.csv", INVOICES_CSV))).code == 0
    paid = _pi(stripe_client, 12000)
    other = _pi(stripe_client, 500, "jpy")
    before = cli.snapshot()
    text = (HEADER + f"PAY-1,INV-9,100.00,usd,{paid.id}\nPAY-2,INV-11,1.000,kwd,pi_doesnotexist\n"
            f"PAY-3,INV-10,600,jpy,{other.id}\n")
    r = cli("import", str(cli.write("p.csv", text)))
    assert r.code == 2
    assert f"line 2: Stripe has {paid.id} for 120.00 USD, the file says 100.00 USD" in r.err
    assert "line 3: psp_reference pi_doesnotexist does not exist in Stripe" in r.err
    assert "line 4: Stripe has" in r.err
    assert cli.snapshot() == before


def test_invoices_import_needs_no_stripe(cli: Cli, stripe_env: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("KOLLREFUND_STRIPE__API_BASE", "http://127.0.0.1:9")  # nothing listens there
    assert cli("import", str(cli.write("inv.csv", INVOICES_CSV))).code == 0


def test_stripe_unreachable_stops_the_import_with_exit_6(cli: Cli, stripe_env: Any, monkeypatch: Any) -> None:
    assert cli("import", str(cli.write("inv.csv", INVOICES_CSV))).code == 0
    before = cli.snapshot()
    monkeypatch.setenv("KOLLREFUND_STRIPE__API_BASE", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("KOLLREFUND_STRIPE__MAX_NETWORK_RETRIES", "0")
    r = cli("import", str(cli.write("p.csv", HEADER + "PAY-1,INV-9,120.00,usd,pi_anything\n")))
    assert r.code == 6 and "safe to run" in r.err and "bad row" not in r.err
    assert cli.snapshot() == before


def test_a_refused_key_stops_the_import_with_exit_3(cli: Cli, stripe_env: Any, monkeypatch: Any) -> None:
    assert cli("import", str(cli.write("inv.csv", INVOICES_CSV))).code == 0
    before = cli.snapshot()
    monkeypatch.setenv("KOLLREFUND_STRIPE__API_KEY", "sk_live_notarealkey123")  # the sandbox refuses live keys
    r = cli("import", str(cli.write("p.csv", HEADER + "PAY-1,INV-9,120.00,usd,pi_anything\n")))
    assert r.code == 3 and "sk_live_notarealkey123" not in r.err
    assert cli.snapshot() == before
