"""`kollrefund log` and the append-only audit table (issue 5).

Who (``--operator``, the environment, the config file, the OS user), when, what, why
(``--note``), the Stripe ids and the balances before and after; filtering by id and
by time; ``--export FILE.jsonl`` for an auditor; and a database that refuses to
rewrite its own history.
"""

from __future__ import annotations

import re
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from reconcile_support import collect, js, jsonl, ok, one_error, pi_of, refund, sqlite_on, status, world_stripe

__all__ = ["world_stripe"]  # fixtures, re-exported for pytest

ENTRY_KEYS = {"id", "at", "operator", "action", "subject_id", "invoice_id", "payment_id", "refund_id", "amount",
              "currency", "balance_before", "balance_after", "reason", "stripe_ref", "netsuite_ref", "detail"}
TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


def entries(cli: Any, *args: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = js(cli, "log", *args)["entries"]
    return out


def import_invoice(cli: Any, inv_id: str, *global_opts: str) -> None:
    path = cli.write(f"{inv_id}.csv", f"id,customer,currency,total\n{inv_id},Acme,usd,10.00\n")
    ok(cli(*global_opts, "import", str(path)))


@pytest.fixture
def story(world_stripe: Any, stripe_client: Any) -> Any:
    """A payment by `tester`, a partial refund by `alice` with a note, and one made in the Dashboard."""
    cli = world_stripe
    started = datetime.now(UTC).replace(microsecond=0)
    pay = collect(cli, "INV-9")
    rf = str(js(cli, "--operator", "alice", "refund", pay, "--amount", "20.00", "--note", "goods came back",
                "--yes")["refund_id"])
    outside = stripe_client.v1.refunds.create(params={"payment_intent": pi_of(cli, pay), "amount": 1000})
    ok(cli("reconcile", "--fix", "--yes"))
    cli.ids = {"pay": pay, "rf": rf, "outside": outside.id, "started": started}
    return cli


IMPORT_ACTIONS = ("import.invoices", "invoice.imported")


# -- who, when, what, why ---------------------------------------------------------------------


@pytest.mark.slow
def test_log_says_who_when_what_why_with_stripe_ids_and_balances(story: Any) -> None:
    cli = story
    pay, rf = cli.ids["pay"], cli.ids["rf"]
    rows = entries(cli)
    assert rows and all(set(e) == ENTRY_KEYS for e in rows)
    assert [e["id"] for e in rows] == sorted(e["id"] for e in rows)  # oldest first
    finished = datetime.now(UTC)
    for e in rows:
        assert TIME.match(e["at"]), e
        at = datetime.strptime(e["at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        # the fixture imported the invoices before `started` was taken; the story's own rows come after
        earliest = datetime.min.replace(tzinfo=UTC) if e["action"] in IMPORT_ACTIONS else cli.ids["started"]
        assert earliest <= at <= finished
    view = status(cli, pay)
    pi = view["payment"]["psp_reference"]
    [mine, theirs] = view["refunds"]

    # the payment: tester (from the environment), with its PaymentIntent and the balance it took down
    [paid] = [e for e in rows if e["payment_id"] == pay and e["stripe_ref"] == pi and e["balance_after"] == "0.00"]
    assert (paid["operator"], paid["invoice_id"], paid["amount"], paid["currency"]) == ("tester", "INV-9", "120.00",
                                                                                        "usd")
    assert paid["balance_before"] == "120.00"

    # our refund: alice (--operator), why (--note), the refund's own Stripe id, balances before and after
    done = [e for e in rows if e["refund_id"] == rf and e["stripe_ref"] == mine["psp_reference"]]
    assert done, rows
    for e in done:
        assert (e["operator"], e["reason"], e["amount"], e["payment_id"]) == ("alice", "goods came back", "20.00", pay)
    assert any((e["balance_before"], e["balance_after"]) == ("0.00", "20.00") for e in
               [e for e in rows if e["refund_id"] == rf]), rows

    # the Dashboard refund, recorded by reconcile: its Stripe id, and the balance it restored
    outside = [e for e in rows if e["stripe_ref"] == cli.ids["outside"]]
    assert outside and outside[0]["refund_id"] == theirs["id"] and outside[0]["amount"] == "10.00"
    assert any((e["balance_before"], e["balance_after"]) == ("20.00", "30.00") and e["payment_id"] == pay
               for e in rows), rows

    # the table shows the same: who, what, why, the Stripe ids and the balances
    r = ok(cli("log"))
    for text in ("alice", "tester", "goods came back", mine["psp_reference"], cli.ids["outside"], "0.00 → 20.00",
                 "120.00 → 0.00"):
        assert text in r.out, (text, r.out)


def test_operator_from_flag_environment_config_file_and_os_user(cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import_invoice(cli, "INV-1")  # KOLLREFUND_OPERATOR__NAME=tester (conftest)
    import_invoice(cli, "INV-2", "--operator", "alice")
    monkeypatch.delenv("KOLLREFUND_OPERATOR__NAME")
    cli.write("kollrefund.toml", '[operator]\nname = "carol"\n')
    import_invoice(cli, "INV-3")
    (cli.home / "kollrefund.toml").unlink()
    for name in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        monkeypatch.setenv(name, "dave")
    import_invoice(cli, "INV-4")
    import_invoice(cli, "INV-5", "--operator", "erin")  # the flag wins over the OS user
    who = [(e["operator"], e["detail"]["first_id"]) for e in entries(cli) if e["action"] == "import.invoices"]
    assert who == [("tester", "INV-1"), ("alice", "INV-2"), ("carol", "INV-3"), ("dave", "INV-4"), ("erin", "INV-5")]


# -- filters --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_log_id_filters_and_export(story: Any) -> None:
    cli = story
    pay, rf = cli.ids["pay"], cli.ids["rf"]
    every = entries(cli)
    for record in (pay, rf, "INV-9"):
        rows = entries(cli, record)
        assert rows, record
        assert all(record in (e["subject_id"], e["invoice_id"], e["payment_id"], e["refund_id"]) for e in rows)
        assert [e for e in every if record in (e["subject_id"], e["invoice_id"], e["payment_id"],
                                               e["refund_id"])] == rows
    assert len(entries(cli, rf)) < len(entries(cli, pay)) < len(every)
    r = ok(cli("log", rf))
    assert rf in r.out and "goods came back" in r.out

    # --export for an auditor: JSON lines, the same entries as --json
    target = cli.home / "audit.jsonl"
    r = cli("log", "--export", str(target))
    assert r.code == 0 and r.out == "", (r.out, r.err)
    lines = jsonl(target)
    assert lines == every
    assert str(len(lines)) in r.err
    assert all(line.startswith("{") and line.endswith("}") for line in target.read_text().splitlines())
    # only one record
    one = cli.home / "rf.jsonl"
    ok(cli("log", rf, "--export", str(one)))
    assert jsonl(one) == entries(cli, rf)
    # an existing file is never overwritten
    before = target.read_bytes()
    line = one_error(cli("log", "--export", str(target)))
    assert str(target) in line and "exists" in line
    assert target.read_bytes() == before
    # nor is a file written where it cannot be
    one_error(cli("log", "--export", str(cli.home / "no" / "such" / "dir.jsonl")))
    assert not (cli.home / "no").exists()


def test_log_since_date_or_time(cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from kollrefund import store

    real_now = store.now
    for inv_id, at in (("INV-1", "2026-01-31T23:59:59"), ("INV-2", "2026-02-01T00:00:00"),
                       ("INV-3", "2026-02-01T09:30:00")):
        when = datetime.fromisoformat(at).replace(tzinfo=UTC)
        monkeypatch.setattr(store, "now", lambda when=when: when)
        import_invoice(cli, inv_id)
    monkeypatch.setattr(store, "now", real_now)

    def since(value: str) -> list[str]:
        return [e["detail"]["first_id"] for e in entries(cli, "--since", value) if e["action"] == "import.invoices"]

    assert since("2026-01-01") == ["INV-1", "INV-2", "INV-3"]
    assert since("2026-02-01") == ["INV-2", "INV-3"]
    assert since("2026-02-01T09:30:00Z") == ["INV-3"]
    assert since("2026-02-01T10:30:00+01:00") == ["INV-3"]  # an offset is read as the UTC time it means
    assert since("2026-02-01T09:30:01Z") == []
    assert since("2027-01-01") == []


# -- append-only ------------------------------------------------------------------------------------


def test_the_database_refuses_update_and_delete_on_the_audit_table(cli: Any) -> None:
    import_invoice(cli, "INV-1")
    import_invoice(cli, "INV-2")
    before = cli.snapshot()["audit"]
    assert len(before) == 4  # per file (import.invoices) and per invoice (invoice.imported)
    con = sqlite_on(cli.cache)
    try:
        for sql in ("UPDATE audit SET operator = 'mallory'",
                    "UPDATE audit SET reason = 'nothing to see' WHERE id = 1",
                    "DELETE FROM audit",
                    "DELETE FROM audit WHERE id = 2"):
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                con.execute(sql)
        # nor inside a transaction that would otherwise commit
        con.execute("BEGIN")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            con.execute("DELETE FROM audit WHERE id = 1")
        con.execute("COMMIT")
        # appending is what it is for
        con.execute("INSERT INTO audit (at, operator, action) VALUES ('2026-01-01T00:00:00Z', 'x', 'note')")
    finally:
        con.close()
    after = cli.snapshot()["audit"]
    assert after[:4] == before and len(after) == 5


# -- bad input -----------------------------------------------------------------------------------


def test_bad_input_is_exit_2_one_line_and_changes_nothing(cli: Any) -> None:
    import_invoice(cli, "INV-1")
    before = cli.snapshot()
    for args in (("log", "--since", "last week"), ("log", "--since", "2026-02-30"), ("log", "--since", ""),
                 ("log", "--since", "2026-13-01T00:00:00Z"), ("log", "PAY-404"), ("log", "RF-1"),
                 ("log", "INV-404", "--json"), ("log", "--days", "3")):
        line = one_error(cli(*args))
        assert len(line) < 300, line
        if "PAY-404" in args:
            assert "PAY-404" in line
        assert cli.snapshot() == before, args
    assert not list(Path(cli.home).glob("*.jsonl"))
    # an unknown id with --export writes no file
    one_error(cli("log", "PAY-404", "--export", str(cli.home / "x.jsonl")))
    assert not (cli.home / "x.jsonl").exists()


@pytest.mark.slow
def test_refund_note_is_in_the_log_of_both_the_refund_and_the_payment(world_stripe: Any) -> None:
    cli = world_stripe
    pay = collect(cli, "INV-9")
    rf = refund(cli, pay, "--note", "duplicate order #4411")
    assert any(e["reason"] == "duplicate order #4411" for e in entries(cli, rf))
    assert any(e["reason"] == "duplicate order #4411" for e in entries(cli, pay))


@pytest.mark.slow
def test_log_of_the_invoice_shows_a_refund_recorded_from_stripe(story: Any) -> None:
    cli = story
    outside = [e for e in entries(cli, "INV-9") if e["stripe_ref"] == cli.ids["outside"]]
    assert outside and outside[0]["invoice_id"] == "INV-9", entries(cli, "INV-9")
