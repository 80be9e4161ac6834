"""The cache itself: migrations, constraints that restate the money invariants, WAL."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlite_utils import Database

from kollrefund.schema import migrations
from kollrefund.store import Store


def test_reader_upgrades_an_older_cache(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = Database(path)
    migrations.apply(db, stop_before="0002_meta")
    db.close()
    with Store.open(path, readonly=True) as store:
        assert store.get_meta("anything") is None  # the 0002 table is there
    assert not migrations.pending(Database(path))


def test_writer_uses_wal_and_foreign_keys(tmp_path: Path) -> None:
    with Store.open(tmp_path / "c.db") as store:
        assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store.conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        with pytest.raises(sqlite3.IntegrityError):
            store.conn.execute(
                "INSERT INTO payments (id, invoice_id, currency, amount_minor, captured_minor, refunded_minor, "
                "status, created_at, updated_at) VALUES ('PAY-1', 'INV-404', 'usd', 1, 0, 0, 'pending', 'x', 'x')"
            )


@pytest.mark.parametrize(
    ("total", "balance", "status"),
    [(0, 0, "unpaid"), (100, 101, "unpaid"), (100, -1, "paid"), (100, 50, "bogus")],
)
def test_invoice_checks_refuse_impossible_rows(tmp_path: Path, total: int, balance: int, status: str) -> None:
    with Store.open(tmp_path / "c.db") as store, pytest.raises(sqlite3.IntegrityError):
        store.conn.execute(
            "INSERT INTO invoices (id, customer, currency, total_minor, balance_minor, status, created_at, "
            "updated_at) VALUES ('INV-1', 'A', 'usd', ?, ?, ?, 'x', 'x')",
            (total, balance, status),
        )


@pytest.mark.parametrize(("amount", "captured", "refunded"), [(100, 101, 0), (100, 50, 51), (0, 0, 0), (100, -1, 0)])
def test_payment_checks_refuse_refunded_above_captured_above_amount(
    tmp_path: Path, amount: int, captured: int, refunded: int
) -> None:
    with Store.open(tmp_path / "c.db") as store:
        store.conn.execute(
            "INSERT INTO invoices (id, customer, currency, total_minor, balance_minor, status, created_at, "
            "updated_at) VALUES ('INV-1', 'A', 'usd', 100, 100, 'unpaid', 'x', 'x')"
        )
        with pytest.raises(sqlite3.IntegrityError):
            store.conn.execute(
                "INSERT INTO payments (id, invoice_id, currency, amount_minor, captured_minor, refunded_minor, "
                "status, created_at, updated_at) VALUES ('PAY-1', 'INV-1', 'usd', ?, ?, ?, 'paid', 'x', 'x')",
                (amount, captured, refunded),
            )


def test_strict_tables_refuse_a_float_amount(tmp_path: Path) -> None:
    with Store.open(tmp_path / "c.db") as store, pytest.raises(sqlite3.IntegrityError):
        store.conn.execute(
            "INSERT INTO invoices (id, customer, currency, total_minor, balance_minor, status, created_at, "
            "updated_at) VALUES ('INV-1', 'A', 'usd', 1.5, 1.5, 'unpaid', 'x', 'x')"
        )


def test_readers_know_every_migration_by_name() -> None:
    from kollrefund.store import MIGRATIONS

    assert tuple(m.name for m in migrations._migrations) == MIGRATIONS


def test_reading_the_cache_does_not_import_sqlite_utils(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "c.db"
    Store.open(path).close()
    code = (
        "import sys; from pathlib import Path; from kollrefund.store import Store; "
        f"s = Store.open(Path({str(path)!r}), readonly=True); s.list_invoices(); "
        "print('sqlite_utils' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_nested_transaction_rolls_back_alone(tmp_path: Path) -> None:
    with Store.open(tmp_path / "c.db") as store:
        with store.transaction():
            store.set_meta("outer", "1")
            with pytest.raises(RuntimeError), store.transaction():
                store.set_meta("inner", "1")
                raise RuntimeError("inner fails")
            store.set_meta("after", "1")
        assert (store.get_meta("outer"), store.get_meta("inner"), store.get_meta("after")) == ("1", None, "1")


def test_opening_a_current_cache_for_writing_does_not_import_sqlite_utils(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "c.db"
    Store.open(path).close()
    code = (
        "import sys; from pathlib import Path; from kollrefund.store import Store; "
        f"s = Store.open(Path({str(path)!r})); "
        "s.transaction().__enter__(); print('sqlite_utils' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
