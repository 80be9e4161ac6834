"""import, invoices, payments, status through the CLI, against a real SQLite file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import INVOICES_CSV, PAYMENTS_CSV, Cli


def seed(cli: Cli) -> None:
    assert cli("import", str(cli.write("inv.csv", INVOICES_CSV))).code == 0
    assert cli("import", str(cli.write("pay.csv", PAYMENTS_CSV))).code == 0


def test_seed_step_1_and_2_invoice_paid_with_breakdown(cli: Cli) -> None:
    seed(cli)
    data = cli("status", "INV-9", "--json").json()
    assert data["invoice"] == {
        "id": "INV-9",
        "customer": "Acme",
        "currency": "usd",
        "total": "120.00",
        "balance": "0.00",
        "status": "paid",
        "netsuite": {"id": "104", "sync": "pending"},
    }
    [p] = data["payments"]
    assert {
        k: p[k] for k in ("id", "invoice_id", "status", "amount", "captured", "refunded", "psp", "psp_reference")
    } == {
        "id": "PAY-123",
        "invoice_id": "INV-9",
        "status": "paid",
        "amount": "120.00",
        "captured": "120.00",
        "refunded": "0.00",
        "psp": "stripe",
        "psp_reference": "pi_123",
    }
    assert p["netsuite"] == {"id": None, "sync": "pending"}
    assert len(p["updated_at"]) == 20 and p["updated_at"].endswith("Z")
    pay = cli("status", "PAY-123", "--json").json()
    assert pay["payment"] == p and pay["refunds"] == []


def test_plain_table_when_piped(cli: Cli) -> None:
    seed(cli)
    r = cli("status", "INV-9")
    assert r.code == 0
    assert "\x1b[" not in r.out  # no colour codes off a terminal
    assert "INV-9" in r.out and "pi_123" in r.out and "Stripe" in r.out and "paid" in r.out
    lines = [ln for ln in r.out.splitlines() if ln.startswith(("Payment  ", "PAY-123"))]
    assert len(lines) == 2 and lines[0].index("Status") == lines[1].index("paid")  # aligned columns


def test_lists_and_filters(cli: Cli) -> None:
    seed(cli)
    invoices = cli("invoices", "--json").json()["invoices"]
    assert [i["id"] for i in invoices] == ["INV-10", "INV-11", "INV-9"]
    assert [i["total"] for i in invoices] == ["1500", "10.250", "120.00"]
    paid = cli("invoices", "--status", "paid", "--json").json()["invoices"]
    assert [i["id"] for i in paid] == ["INV-9"]
    assert cli("payments", "--status", "refunded", "--json").json() == {"payments": []}
    assert cli("invoices", "--status", "bogus").code == 2


def test_json_import_and_kind_forced(cli: Cli) -> None:
    path = cli.write("inv.json", json.dumps([{"id": "INV-1", "customer": "A", "currency": "eur", "total": "9.99"}]))
    r = cli("import", str(path), "--json")
    assert r.code == 0 and r.json()["added"] == 1
    assert cli("status", "INV-1", "--json").json()["invoice"]["total"] == "9.99"
    assert cli("import", str(path), "--kind", "payments").code == 2


def test_reimport_identical_is_unchanged_and_different_is_refused(cli: Cli) -> None:
    seed(cli)
    r = cli("import", str(cli.write("inv.csv", INVOICES_CSV)), "--json")
    assert r.code == 0 and r.json()["unchanged"] == 3 and r.json()["added"] == 0
    before = cli.snapshot()
    changed = INVOICES_CSV.replace("Globex,jpy,1500", "Globex,jpy,1600")
    r = cli("import", str(cli.write("inv2.csv", changed)))
    assert r.code == 2 and "INV-10" in r.err and "1500 JPY → 1600 JPY" in r.err and "--update" in r.err
    assert cli.snapshot() == before
    r = cli("import", str(cli.write("inv2.csv", changed)), "--update", "--json")
    assert r.code == 0 and r.json()["updated"] == 1
    assert cli("status", "INV-10", "--json").json()["invoice"]["balance"] == "1600"
    # a total below what was already paid cannot be applied
    shrink = INVOICES_CSV.replace("Acme,usd,120.00", "Acme,usd,100.00")
    before = cli.snapshot()
    r = cli("import", str(cli.write("inv3.csv", shrink)), "--update")
    assert r.code == 2 and "INV-9" in r.err and cli.snapshot() == before


def test_dry_run_changes_nothing(cli: Cli) -> None:
    seed(cli)
    before = cli.snapshot()
    more = "id,customer,currency,total\nINV-20,Acme,usd,5.00\n"
    r = cli("import", str(cli.write("more.csv", more)), "--dry-run")
    assert r.code == 0 and "Would import 1" in r.out
    assert cli.snapshot() == before


def test_audit_rows_written_by_import(cli: Cli) -> None:
    seed(cli)
    audit = cli.snapshot()["audit"]
    actions = [row[3] for row in audit]
    assert actions == ["import.invoices", "invoice.imported", "invoice.imported", "invoice.imported", "import.payment"]
    assert [row[4] for row in audit[1:4]] == ["INV-9", "INV-10", "INV-11"]  # subject ids, in file order
    assert all(row[2] == "tester" for row in audit)


BAD_INVOICE_FILES = {
    "missing column": ("id,customer,currency\nINV-1,A,usd\n", "lacks the column total"),
    "unknown column": ("id,customer,currency,total,totl\nINV-1,A,usd,1.00,1\n", "unknown column totl"),
    "negative": ("id,customer,currency,total\nINV-1,A,usd,-5\n", "line 2: total must be more than zero"),
    "zero": ("id,customer,currency,total\nINV-1,A,usd,0\n", "line 2: total must be more than zero"),
    "non-numeric": ("id,customer,currency,total\nINV-1,A,usd,abc\n", "line 2: 'abc' is not an amount"),
    "over-precise": ("id,customer,currency,total\nINV-1,A,usd,10.001\n", "too many decimals for USD"),
    "yen decimals": ("id,customer,currency,total\nINV-1,A,jpy,12.5\n", "too many decimals for JPY"),
    "unknown currency": ("id,customer,currency,total\nINV-1,A,zzz,1\n", "Unknown currency 'zzz'"),
    "duplicate id": (
        "id,customer,currency,total\nINV-1,A,usd,1\nINV-1,B,usd,2\n",
        "line 3: id INV-1 is already on line 2",
    ),
    "bad id": ("id,customer,currency,total\nINV 1,A,usd,1\n", "letters, digits"),
    "bad date": ("id,customer,currency,total,due_on\nINV-1,A,usd,1,tomorrow\n", "not a date"),
    "empty": ("", "is empty"),
    "header only": ("id,customer,currency,total\n", "no rows"),
    "ragged": ("id,customer,currency,total\nINV-1,A,usd\n", "has 3 fields"),
    "bad json": ('[{"id": "INV-1",', "not valid JSON"),
    "json not list": ('{"id": "INV-1"}', "JSON list"),
    "json float": ('[{"id":"INV-1","customer":"A","currency":"usd","total":1.005}]', "too many decimals"),
}


@pytest.mark.parametrize("case", sorted(BAD_INVOICE_FILES))
def test_bad_invoice_files_change_nothing(cli: Cli, case: str) -> None:
    seed(cli)
    before = cli.snapshot()
    text, expected = BAD_INVOICE_FILES[case]
    name = "bad.json" if case.startswith(("bad json", "json")) else "bad.csv"
    r = cli("import", str(cli.write(name, text)))
    assert r.code == 2, r.err
    assert expected in r.err
    assert "Traceback" not in r.err and r.out == ""
    assert cli.snapshot() == before


def test_every_bad_row_is_named(cli: Cli) -> None:
    text = "id,customer,currency,total\nINV-1,A,usd,1\nINV-2,A,usd,-1\nINV-3,,usd,1\nINV-4,A,usd,x\n"
    r = cli("import", str(cli.write("bad.csv", text)))
    assert r.code == 2
    assert "3 bad rows; nothing was imported" in r.err
    for where in ("line 3", "line 4", "line 5"):
        assert where in r.err
    assert "line 2" not in r.err
    assert not cli.cache.exists() or cli.snapshot()["invoices"] == []


BAD_PAYMENT_FILES = {
    "unknown invoice": ("PAY-1,INV-404,1.00,usd,pi_1", "invoice INV-404 is not in the cache"),
    "currency differs": ("PAY-1,INV-10,1.00,usd,pi_1", "is in USD but invoice INV-10 is in JPY"),
    "more than balance": ("PAY-1,INV-11,10.260,kwd,pi_1", "more than the 10.250 KWD still open"),
    "already paid": ("PAY-1,INV-9,0.01,usd,pi_1", "still open on invoice INV-9"),
    "reference taken": ("PAY-1,INV-11,1.000,kwd,pi_123", "already belongs to PAY-123"),
    "negative": ("PAY-1,INV-11,-1,kwd,pi_1", "must be more than zero"),
}


@pytest.mark.parametrize("case", sorted(BAD_PAYMENT_FILES))
def test_bad_payment_files_change_nothing(cli: Cli, case: str) -> None:
    seed(cli)
    before = cli.snapshot()
    row, expected = BAD_PAYMENT_FILES[case]
    r = cli("import", str(cli.write("p.csv", "id,invoice_id,amount,currency,psp_reference\n" + row + "\n")))
    assert r.code == 2 and expected in r.err, r.err
    assert cli.snapshot() == before


def test_two_payments_in_one_file_cannot_overpay(cli: Cli) -> None:
    seed(cli)
    before = cli.snapshot()
    text = "id,invoice_id,amount,currency,psp_reference\nPAY-1,INV-10,1000,jpy,pi_a\nPAY-2,INV-10,501,jpy,pi_b\n"
    r = cli("import", str(cli.write("p.csv", text)))
    assert r.code == 2 and "line 3" in r.err and "500 JPY still open" in r.err
    assert cli.snapshot() == before


def test_unknown_ids(cli: Cli) -> None:
    seed(cli)
    r = cli("status", "INV-404")
    assert r.code == 2 and "INV-404" in r.err and "Traceback" not in r.err


def test_missing_file(cli: Cli) -> None:
    r = cli("import", "nope.csv")
    assert r.code == 2 and "No file nope.csv" in r.err


def test_bad_flag_is_usage(cli: Cli) -> None:
    r = cli("status", "INV-9", "--bogus")
    assert r.code == 2 and "--bogus" in r.err


def test_invalid_config_toml(cli: Cli, home: Path) -> None:
    (home / "kollrefund.toml").write_text("[cache\npath = 1\n")
    r = cli("invoices")
    assert r.code == 3 and "kollrefund.toml" in r.err and "Traceback" not in r.err


def test_corrupted_cache(cli: Cli) -> None:
    cli.cache.write_bytes(b"this is not sqlite at all, just junk bytes" * 100)
    before = cli.cache.read_bytes()
    for args in (("invoices",), ("import", str(cli.write("inv.csv", INVOICES_CSV)))):
        r = cli(*args)
        assert r.code == 3 and "cannot be read as a SQLite database" in r.err, r.err
    assert cli.cache.read_bytes() == before


def test_unreadable_cache_directory(cli: Cli, home: Path) -> None:
    blocker = home / "file"
    blocker.write_text("x")
    r = cli("--cache", str(blocker / "cache.db"), "import", str(cli.write("inv.csv", INVOICES_CSV)))
    assert r.code == 3 and "cannot be opened" in r.err


def test_readers_do_not_create_a_cache(cli: Cli) -> None:
    assert cli("invoices", "--json").json() == {"invoices": []}
    assert not cli.cache.exists()


def test_secret_never_in_error(cli: Cli, home: Path) -> None:
    (home / "kollrefund.toml").write_text('[stripe]\napi_key = "sk_test_SUPERSECRET123"\ntimeout_seconds = -1\n')
    r = cli("invoices")
    assert r.code == 3 and "SUPERSECRET" not in r.err + r.out
