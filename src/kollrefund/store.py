"""The local cache: the only module that speaks SQL.

A thin layer over sqlite3 and sqlite-utils: it opens the file (WAL, foreign keys, a busy
timeout so two operators wait for each other instead of failing), applies the
migrations, maps rows to domain values and back, and writes every change in one
transaction together with its audit row and, when NetSuite must hear of it, its
outbox row.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kollrefund.domain import (
    Invoice,
    InvoiceStatus,
    Payment,
    PaymentStatus,
    Refund,
    RefundStatus,
    iso,
)
from kollrefund.errors import ConfigError, NotFound
from kollrefund.money import Money

if TYPE_CHECKING:
    from sqlite_utils import Database

# The migrations schema.py registers, in order (a test keeps the two in step). The
# cache checks them with one query and imports sqlite-utils only to migrate: most
# commands never need it, and it is a third of their start-up.
MIGRATIONS = ("0001_core", "0002_meta")

BUSY_TIMEOUT_MS = 15_000


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    action: str
    operator: str
    subject_id: str | None = None
    invoice_id: str | None = None
    payment_id: str | None = None
    refund_id: str | None = None
    amount: Money | None = None
    balance_before: Money | None = None
    balance_after: Money | None = None
    reason: str | None = None
    stripe_ref: str | None = None
    netsuite_ref: str | None = None
    detail: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class SyncState:
    netsuite_id: str | None
    sync: str
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Intent:
    id: int
    kind: str
    payment_id: str
    refund_id: str | None
    amount_minor: int | None
    idempotency_key: str
    params: dict[str, Any]
    state: str
    operator: str
    reason: str | None
    created_at: str


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    kind: str
    record_id: str
    depends_on: int | None
    payload: dict[str, Any]
    state: str
    attempts: int
    last_error: str | None


def _corrupt(path: Path, exc: Exception) -> ConfigError:
    return ConfigError(
        f"The cache at {path} cannot be read as a SQLite database ({exc}).",
        hint="Restore it from a backup, or point cache.path (KOLLREFUND_CACHE__PATH) at another file.",
    )


class Store:
    """The cache. Open with :meth:`open`; use as a context manager to close it."""

    def __init__(self, conn: sqlite3.Connection, path: Path | None) -> None:
        self.path = path
        self.conn = conn
        self._db: Database | None = None
        self._depth = 0

    @property
    def db(self) -> Database:
        """sqlite-utils over the same connection, for migrations."""
        if self._db is None:
            from sqlite_utils import Database

            self._db = Database(self.conn, execute_plugins=False)
        return self._db

    def _migrate(self) -> None:
        from kollrefund.schema import migrations

        migrations.apply(self.db)

    def _pending_migrations(self) -> bool:
        try:
            rows = self.conn.execute(
                "SELECT name FROM _sqlite_migrations WHERE migration_set = 'kollrefund'"
            ).fetchall()
        except sqlite3.OperationalError:  # no migrations table: a cache from before any
            return True
        return not set(MIGRATIONS) <= {r[0] for r in rows}

    # -- opening -------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path, *, readonly: bool = False) -> Store:
        """Open (and for writers, create and migrate) the cache at ``path``.

        A reader never creates a file: with no cache yet it gets an empty one in memory.
        """
        try:
            if readonly and not path.exists():
                store = cls(sqlite3.connect(":memory:"), None)
                store._migrate()
                return store
            if not readonly:
                path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True) if readonly else sqlite3.connect(str(path))
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            store = cls(conn, path)
            conn.execute("PRAGMA foreign_keys = ON")
            if readonly:
                if store._pending_migrations():
                    # an older cache: upgrade it once (each migration is atomic), then read
                    conn.close()
                    cls.open(path).close()
                    return cls.open(path, readonly=True)
            else:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = FULL")
                if store._pending_migrations():
                    store._migrate()
            return store
        except sqlite3.DatabaseError as exc:
            raise _corrupt(path, exc) from None
        except OSError as exc:
            raise ConfigError(
                f"The cache at {path} cannot be opened ({exc.strerror}).",
                hint="Check cache.path (KOLLREFUND_CACHE__PATH) and its permissions.",
            ) from None

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[Store]:
        """One write transaction, taken at once (BEGIN IMMEDIATE) so writers queue.

        Nested, it is a savepoint: its own work rolls back alone.
        """
        if self.conn.in_transaction:
            name = f"kollrefund_{id(self)}_{self._depth}"
            self._depth += 1
            self.conn.execute(f"SAVEPOINT {name}")
            try:
                yield self
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute(f"ROLLBACK TO SAVEPOINT {name}")
                    self.conn.execute(f"RELEASE SAVEPOINT {name}")
                raise
            else:
                self.conn.execute(f"RELEASE SAVEPOINT {name}")
            finally:
                self._depth -= 1
            return
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self
        except BaseException:
            self.conn.rollback()
            raise
        else:
            self.conn.execute("COMMIT")

    # -- ids -----------------------------------------------------------------------

    def next_id(self, prefix: str) -> str:
        """The next local id such as ``RF-7``; call inside a transaction."""
        row = self.conn.execute(
            "INSERT INTO counters(name, value) VALUES (?, 1) "
            "ON CONFLICT(name) DO UPDATE SET value = value + 1 RETURNING value",
            (prefix,),
        ).fetchone()
        candidate = f"{prefix}-{row[0]}"
        table = {"PAY": "payments", "RF": "refunds"}[prefix]
        # imported ids may already use the same shape: skip past them
        while self.conn.execute(f"SELECT 1 FROM {table} WHERE id = ?", (candidate,)).fetchone():
            row = self.conn.execute(
                "UPDATE counters SET value = value + 1 WHERE name = ? RETURNING value", (prefix,)
            ).fetchone()
            candidate = f"{prefix}-{row[0]}"
        return candidate

    # -- invoices ------------------------------------------------------------------

    _INVOICE_COLS = (
        "id, customer, currency, total_minor, balance_minor, status, netsuite_id, "
        "customer_netsuite_id, stripe_customer, issued_on, due_on"
    )

    @staticmethod
    def _invoice(row: Sequence[Any]) -> Invoice:
        cur = row[2]
        return Invoice(
            id=row[0],
            customer=row[1],
            total=Money(row[3], cur),
            balance=Money(row[4], cur),
            status=InvoiceStatus(row[5]),
            netsuite_id=row[6],
            customer_netsuite_id=row[7],
            stripe_customer=row[8],
            issued_on=row[9],
            due_on=row[10],
        )

    def get_invoice(self, invoice_id: str) -> Invoice:
        row = self.conn.execute(f"SELECT {self._INVOICE_COLS} FROM invoices WHERE id = ?", (invoice_id,)).fetchone()
        if row is None:
            raise NotFound(f"No invoice {invoice_id} in the cache.", hint="List them with `kollrefund invoices`.")
        return self._invoice(row)

    def find_invoice(self, invoice_id: str) -> Invoice | None:
        row = self.conn.execute(f"SELECT {self._INVOICE_COLS} FROM invoices WHERE id = ?", (invoice_id,)).fetchone()
        return None if row is None else self._invoice(row)

    def _rows_in(self, select: str, column: str, values: Iterable[str]) -> Iterator[Sequence[Any]]:
        """``select … WHERE column IN (values)``, 500 values a query (SQLite's variable limit)."""
        items = list(values)
        for start in range(0, len(items), 500):
            chunk = items[start : start + 500]
            yield from self.conn.execute(f"{select} WHERE {column} IN ({','.join('?' * len(chunk))})", chunk)

    def invoices_by_id(self, ids: Iterable[str]) -> dict[str, Invoice]:
        invoices = (self._invoice(r) for r in self._rows_in(f"SELECT {self._INVOICE_COLS} FROM invoices", "id", ids))
        return {inv.id: inv for inv in invoices}

    def list_invoices(self, *, status: str | None = None, limit: int | None = None) -> list[Invoice]:
        sql = f"SELECT {self._INVOICE_COLS} FROM invoices"
        args: list[Any] = []
        if status:
            sql += " WHERE status = ?"
            args.append(status)
        sql += " ORDER BY id"
        if limit:
            sql += " LIMIT ?"
            args.append(limit)
        return [self._invoice(r) for r in self.conn.execute(sql, args)]

    def insert_invoices(self, rows: Iterable[tuple[Any, ...]]) -> int:
        """Bulk insert of already-validated invoice tuples in ``_INVOICE_COLS`` order + times."""
        cur = self.conn.executemany(
            f"INSERT INTO invoices ({self._INVOICE_COLS}, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            rows,
        )
        return cur.rowcount

    def save_invoice(self, inv: Invoice) -> None:
        ts = iso(now())
        self.conn.execute(
            "UPDATE invoices SET customer=?, currency=?, total_minor=?, balance_minor=?, status=?, "
            "netsuite_id=?, customer_netsuite_id=?, stripe_customer=?, issued_on=?, due_on=?, "
            "updated_at=? WHERE id=?",
            (
                inv.customer,
                inv.currency,
                inv.total.minor,
                inv.balance.minor,
                inv.status.value,
                inv.netsuite_id,
                inv.customer_netsuite_id,
                inv.stripe_customer,
                inv.issued_on,
                inv.due_on,
                ts,
                inv.id,
            ),
        )

    def invoice_sync(self, inv: Invoice) -> SyncState:
        """An invoice's NetSuite state: the worst of its payments' and refunds' sync states."""
        row = self.conn.execute(
            "SELECT group_concat(s) FROM ("
            " SELECT ns_sync AS s FROM payments WHERE invoice_id = ?"
            " UNION SELECT r.ns_sync FROM refunds r JOIN payments p ON p.id = r.payment_id"
            " WHERE p.invoice_id = ?)",
            (inv.id, inv.id),
        ).fetchone()
        states = set((row[0] or "").split(","))
        sync = "failed" if "failed" in states else "pending" if "pending" in states else "synced"
        if inv.netsuite_id is None:
            sync = "pending" if sync == "synced" else sync
        return SyncState(inv.netsuite_id, sync)

    # -- payments ------------------------------------------------------------------

    _PAYMENT_COLS = (
        "id, invoice_id, currency, amount_minor, captured_minor, refunded_minor, status, "
        "psp, psp_reference, updated_at, netsuite_id, ns_sync, ns_error"
    )

    @staticmethod
    def _payment(row: Sequence[Any]) -> Payment:
        cur = row[2]
        return Payment(
            id=row[0],
            invoice_id=row[1],
            amount=Money(row[3], cur),
            captured=Money(row[4], cur),
            refunded=Money(row[5], cur),
            status=PaymentStatus(row[6]),
            psp=row[7],
            psp_reference=row[8],
            updated_at=row[9],
            netsuite_id=row[10],
        )

    def get_payment(self, payment_id: str) -> Payment:
        row = self.conn.execute(f"SELECT {self._PAYMENT_COLS} FROM payments WHERE id = ?", (payment_id,)).fetchone()
        if row is None:
            raise NotFound(f"No payment {payment_id} in the cache.", hint="List them with `kollrefund payments`.")
        return self._payment(row)

    def find_payment_by_reference(self, psp_reference: str, psp: str = "stripe") -> Payment | None:
        row = self.conn.execute(
            f"SELECT {self._PAYMENT_COLS} FROM payments WHERE psp = ? AND psp_reference = ?",
            (psp, psp_reference),
        ).fetchone()
        return None if row is None else self._payment(row)

    def payments_for_invoice(self, invoice_id: str) -> list[Payment]:
        return [
            self._payment(r)
            for r in self.conn.execute(
                f"SELECT {self._PAYMENT_COLS} FROM payments WHERE invoice_id = ? ORDER BY created_at, id",
                (invoice_id,),
            )
        ]

    def payments_for_invoices(self, invoice_ids: Iterable[str]) -> dict[str, list[Payment]]:
        out: dict[str, list[Payment]] = {}
        for r in self._rows_in(f"SELECT {self._PAYMENT_COLS} FROM payments", "invoice_id", invoice_ids):
            p = self._payment(r)
            out.setdefault(p.invoice_id, []).append(p)
        return out

    def list_payments(self, *, status: str | None = None, limit: int | None = None) -> list[Payment]:
        sql = f"SELECT {self._PAYMENT_COLS} FROM payments"
        args: list[Any] = []
        if status:
            sql += " WHERE status = ?"
            args.append(status)
        sql += " ORDER BY id"
        if limit:
            sql += " LIMIT ?"
            args.append(limit)
        return [self._payment(r) for r in self.conn.execute(sql, args)]

    def payment_ids(self, ids: Iterable[str]) -> set[str]:
        return {r[0] for r in self._rows_in("SELECT id FROM payments", "id", ids)}

    def insert_payment(self, p: Payment, *, ns_sync: str = "pending", capture_before: str | None = None) -> None:
        ts = iso(now())
        self.conn.execute(
            f"INSERT INTO payments ({self._PAYMENT_COLS}, capture_before, created_at) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                p.id,
                p.invoice_id,
                p.currency,
                p.amount.minor,
                p.captured.minor,
                p.refunded.minor,
                p.status.value,
                p.psp,
                p.psp_reference,
                p.updated_at,
                p.netsuite_id,
                ns_sync,
                None,
                capture_before,
                ts,
            ),
        )

    def save_payment(self, p: Payment) -> None:
        self.conn.execute(
            "UPDATE payments SET amount_minor=?, captured_minor=?, refunded_minor=?, status=?, "
            "psp_reference=?, updated_at=?, netsuite_id=? WHERE id=?",
            (
                p.amount.minor,
                p.captured.minor,
                p.refunded.minor,
                p.status.value,
                p.psp_reference,
                p.updated_at,
                p.netsuite_id,
                p.id,
            ),
        )

    def payment_sync(self, payment_id: str) -> SyncState:
        row = self.conn.execute(
            "SELECT netsuite_id, ns_sync, ns_error FROM payments WHERE id = ?", (payment_id,)
        ).fetchone()
        return SyncState(row[0], row[1], row[2])

    def set_capture_before(self, payment_id: str, capture_before: str | None) -> None:
        self.conn.execute("UPDATE payments SET capture_before = ? WHERE id = ?", (capture_before, payment_id))

    # -- refunds -------------------------------------------------------------------

    _REFUND_COLS = (
        "id, payment_id, currency, amount_minor, status, reason, psp_reference, created_at, "
        "failure_reason, netsuite_id, ns_sync, ns_error"
    )

    @staticmethod
    def _refund(row: Sequence[Any]) -> Refund:
        return Refund(
            id=row[0],
            payment_id=row[1],
            amount=Money(row[3], row[2]),
            status=RefundStatus(row[4]),
            reason=row[5],
            psp_reference=row[6],
            created_at=row[7],
            failure_reason=row[8],
            netsuite_id=row[9],
        )

    def get_refund(self, refund_id: str) -> Refund:
        row = self.conn.execute(f"SELECT {self._REFUND_COLS} FROM refunds WHERE id = ?", (refund_id,)).fetchone()
        if row is None:
            raise NotFound(f"No refund {refund_id} in the cache.")
        return self._refund(row)

    def find_refund_by_reference(self, psp_reference: str) -> Refund | None:
        row = self.conn.execute(
            f"SELECT {self._REFUND_COLS} FROM refunds WHERE psp_reference = ?", (psp_reference,)
        ).fetchone()
        return None if row is None else self._refund(row)

    def refunds_for_payment(self, payment_id: str) -> list[Refund]:
        return [
            self._refund(r)
            for r in self.conn.execute(
                f"SELECT {self._REFUND_COLS} FROM refunds WHERE payment_id = ? ORDER BY created_at, id",
                (payment_id,),
            )
        ]

    def insert_refund(self, r: Refund) -> None:
        self.conn.execute(
            f"INSERT INTO refunds ({self._REFUND_COLS}, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                r.id,
                r.payment_id,
                r.amount.currency,
                r.amount.minor,
                r.status.value,
                r.reason,
                r.psp_reference,
                r.created_at,
                r.failure_reason,
                r.netsuite_id,
                "pending",
                None,
                iso(now()),
            ),
        )

    def save_refund(self, r: Refund) -> None:
        self.conn.execute(
            "UPDATE refunds SET status=?, psp_reference=?, created_at=?, failure_reason=?, "
            "netsuite_id=?, updated_at=? WHERE id=?",
            (r.status.value, r.psp_reference, r.created_at, r.failure_reason, r.netsuite_id, iso(now()), r.id),
        )

    def refund_sync(self, refund_id: str) -> SyncState:
        row = self.conn.execute(
            "SELECT netsuite_id, ns_sync, ns_error FROM refunds WHERE id = ?", (refund_id,)
        ).fetchone()
        return SyncState(row[0], row[1], row[2])

    # -- intents (money movements in flight) ------------------------------------------

    def add_intent(
        self,
        *,
        kind: str,
        payment_id: str,
        refund_id: str | None,
        amount_minor: int | None,
        idempotency_key: str,
        params: dict[str, Any],
        operator: str,
        reason: str | None,
    ) -> int:
        cur = self.conn.execute(
            "INSERT INTO intents (kind, payment_id, refund_id, amount_minor, idempotency_key, params, "
            "operator, reason, created_at) VALUES (?,?,?,?,?,?,?,?,?)",
            (
                kind,
                payment_id,
                refund_id,
                amount_minor,
                idempotency_key,
                json.dumps(params),
                operator,
                reason,
                iso(now()),
            ),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def open_intents(self, payment_id: str | None = None) -> list[Intent]:
        sql = (
            "SELECT id, kind, payment_id, refund_id, amount_minor, idempotency_key, params, state, "
            "operator, reason, created_at FROM intents WHERE state = 'open'"
        )
        args: tuple[Any, ...] = ()
        if payment_id is not None:
            sql += " AND payment_id = ?"
            args = (payment_id,)
        return [
            Intent(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6]), r[7], r[8], r[9], r[10])
            for r in self.conn.execute(sql + " ORDER BY id", args)
        ]

    def close_intent(self, intent_id: int, state: str) -> None:
        self.conn.execute("UPDATE intents SET state = ?, finished_at = ? WHERE id = ?", (state, iso(now()), intent_id))

    # -- outbox ----------------------------------------------------------------------

    def enqueue(
        self, kind: str, record_id: str, *, depends_on: int | None = None, payload: dict[str, Any] | None = None
    ) -> int:
        ts = iso(now())
        cur = self.conn.execute(
            "INSERT INTO outbox (kind, record_id, depends_on, payload, created_at, updated_at) VALUES (?,?,?,?,?,?)",
            (kind, record_id, depends_on, json.dumps(payload or {}), ts, ts),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def last_outbox_id(self, record_id: str) -> int | None:
        row = self.conn.execute("SELECT max(id) FROM outbox WHERE record_id = ?", (record_id,)).fetchone()
        return None if row[0] is None else int(row[0])

    def outbox_rows(self, states: Sequence[str] = ("pending", "failed")) -> list[OutboxRow]:
        marks = ",".join("?" * len(states))
        return [
            OutboxRow(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6], r[7])
            for r in self.conn.execute(
                "SELECT id, kind, record_id, depends_on, payload, state, attempts, last_error FROM outbox "
                f"WHERE state IN ({marks}) ORDER BY id",
                tuple(states),
            )
        ]

    def outbox_done(self, row_id: int) -> None:
        self.conn.execute(
            "UPDATE outbox SET state = 'synced', attempts = attempts + 1, last_error = NULL, updated_at = ? "
            "WHERE id = ?",
            (iso(now()), row_id),
        )

    def outbox_problem(self, row_id: int, *, failed: bool, error: str) -> None:
        self.conn.execute(
            "UPDATE outbox SET state = ?, attempts = attempts + 1, last_error = ?, updated_at = ? WHERE id = ?",
            ("failed" if failed else "pending", error, iso(now()), row_id),
        )

    def set_sync(self, table: str, record_id: str, *, state: str, netsuite_id: str | None = None,
                 error: str | None = None) -> None:
        """The NetSuite state of a payment or refund row."""
        if table not in ("payments", "refunds"):
            raise ValueError(table)
        self.conn.execute(
            f"UPDATE {table} SET ns_sync = ?, ns_error = ?, netsuite_id = coalesce(?, netsuite_id) WHERE id = ?",
            (state, error, netsuite_id, record_id),
        )

    def set_invoice_netsuite_view(self, invoice_id: str, *, status: str, amount_remaining: str) -> None:
        self.conn.execute(
            "UPDATE invoices SET ns_status = ?, ns_amount_remaining = ?, ns_checked_at = ? WHERE id = ?",
            (status, amount_remaining, iso(now()), invoice_id),
        )

    def invoice_netsuite_view(self, invoice_id: str) -> tuple[str | None, str | None, str | None]:
        row = self.conn.execute(
            "SELECT ns_status, ns_amount_remaining, ns_checked_at FROM invoices WHERE id = ?", (invoice_id,)
        ).fetchone()
        return (None, None, None) if row is None else (row[0], row[1], row[2])

    # -- meta ------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute(
            "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def authorized_payments(self) -> list[tuple[Payment, str | None, str]]:
        """Authorized payments with Stripe's capture deadline (if known) and when they were made."""
        rows = self.conn.execute(
            f"SELECT {self._PAYMENT_COLS}, capture_before, created_at FROM payments "
            "WHERE status = 'authorized' ORDER BY created_at, id"
        ).fetchall()
        return [(self._payment(r), r[-2], r[-1]) for r in rows]

    def stripe_payments(self, *, updated_since: str | None = None) -> list[Payment]:
        """Stripe payments with a PaymentIntent, optionally only those updated since a time."""
        sql = f"SELECT {self._PAYMENT_COLS} FROM payments WHERE psp = 'stripe' AND psp_reference IS NOT NULL"
        args: tuple[Any, ...] = ()
        if updated_since is not None:
            sql += " AND updated_at >= ?"
            args = (updated_since,)
        return [self._payment(r) for r in self.conn.execute(sql + " ORDER BY id", args)]

    def payments_with_open_refunds(self) -> set[str]:
        return {r[0] for r in self.conn.execute("SELECT DISTINCT payment_id FROM refunds WHERE status = 'pending'")}

    # -- audit -----------------------------------------------------------------------

    def audit(self, e: AuditEntry) -> None:
        def fmt(m: Money | None) -> str | None:
            return None if m is None else m.format()

        currency = next((m.currency for m in (e.amount, e.balance_before, e.balance_after) if m), None)
        self.conn.execute(
            "INSERT INTO audit (at, operator, action, subject_id, invoice_id, payment_id, refund_id, "
            "amount, currency, balance_before, balance_after, reason, stripe_ref, netsuite_ref, detail) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                iso(now()),
                e.operator,
                e.action,
                e.subject_id,
                e.invoice_id,
                e.payment_id,
                e.refund_id,
                fmt(e.amount),
                currency,
                fmt(e.balance_before),
                fmt(e.balance_after),
                e.reason,
                e.stripe_ref,
                e.netsuite_ref,
                json.dumps(e.detail, sort_keys=True) if e.detail else None,
            ),
        )

    def audit_imported_invoices(self, rows: Sequence[tuple[Any, ...]], *, operator: str, source: str) -> None:
        """One ``invoice.imported`` audit row per new invoice (tuples in ``_INVOICE_COLS`` order), in bulk."""
        at = iso(now())
        detail = json.dumps({"source": source})
        self.conn.executemany(
            "INSERT INTO audit (at, operator, action, subject_id, invoice_id, amount, currency, balance_after, detail) "
            "VALUES (?,?,'invoice.imported',?,?,?,?,?,?)",
            (
                (at, operator, r[0], r[0], m := Money(r[3], r[2]).format(), r[2], m, detail)
                for r in rows
            ),
        )

    def audit_rows(
        self, *, subject: str | None = None, since: str | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        sql = "SELECT * FROM audit WHERE 1=1"
        args: list[Any] = []
        if subject:
            sql += " AND (subject_id = ? OR invoice_id = ? OR payment_id = ? OR refund_id = ?)"
            args += [subject] * 4
        if since:
            sql += " AND at >= ?"
            args.append(since)
        sql += " ORDER BY id"
        if limit:
            sql += " LIMIT ?"
            args.append(limit)
        cur = self.conn.execute(sql, args)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur]

    # -- whole-state snapshot (tests compare it to prove "nothing changed") -------------

    def snapshot(self) -> dict[str, list[tuple[Any, ...]]]:
        tables = ["invoices", "payments", "refunds", "intents", "outbox", "audit", "counters", "meta"]
        return {t: self.conn.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall() for t in tables}
