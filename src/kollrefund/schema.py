"""The cache's schema, as versioned migrations (sqlite-utils ``Migrations``).

STRICT tables, foreign keys, CHECK constraints that restate the money invariants
(so a bug cannot persist an impossible state), an index on every lookup path,
and an audit table the database itself keeps append-only. A migration, once
released, is never edited: add a new one.
"""

from __future__ import annotations

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

migrations = Migrations("kollrefund")


@migrations(name="0001_core")
def _core(db: Database) -> None:
    db.executescript(
        """
        CREATE TABLE invoices (
            id TEXT PRIMARY KEY,
            customer TEXT NOT NULL,
            currency TEXT NOT NULL,
            total_minor INTEGER NOT NULL CHECK (total_minor > 0),
            balance_minor INTEGER NOT NULL CHECK (balance_minor BETWEEN 0 AND total_minor),
            status TEXT NOT NULL CHECK (status IN ('unpaid', 'partially_paid', 'paid')),
            netsuite_id TEXT,
            customer_netsuite_id TEXT,
            stripe_customer TEXT,
            issued_on TEXT,
            due_on TEXT,
            ns_status TEXT,
            ns_amount_remaining TEXT,
            ns_checked_at TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        ) STRICT;
        CREATE INDEX invoices_status ON invoices(status);
        CREATE UNIQUE INDEX invoices_netsuite_id ON invoices(netsuite_id) WHERE netsuite_id IS NOT NULL;

        CREATE TABLE payments (
            id TEXT PRIMARY KEY,
            invoice_id TEXT NOT NULL REFERENCES invoices(id),
            currency TEXT NOT NULL,
            amount_minor INTEGER NOT NULL CHECK (amount_minor > 0),
            captured_minor INTEGER NOT NULL CHECK (captured_minor BETWEEN 0 AND amount_minor),
            refunded_minor INTEGER NOT NULL CHECK (refunded_minor BETWEEN 0 AND captured_minor),
            status TEXT NOT NULL CHECK (status IN ('pending', 'authorized', 'paid',
                'partially_refunded', 'refunded', 'canceled', 'failed')),
            psp TEXT NOT NULL DEFAULT 'stripe',
            psp_reference TEXT,
            capture_before TEXT,
            netsuite_id TEXT,
            ns_sync TEXT NOT NULL DEFAULT 'pending' CHECK (ns_sync IN ('pending', 'synced', 'failed')),
            ns_error TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        ) STRICT;
        CREATE INDEX payments_invoice ON payments(invoice_id);
        CREATE INDEX payments_status ON payments(status);
        CREATE UNIQUE INDEX payments_psp_reference ON payments(psp, psp_reference)
            WHERE psp_reference IS NOT NULL;

        CREATE TABLE refunds (
            id TEXT PRIMARY KEY,
            payment_id TEXT NOT NULL REFERENCES payments(id),
            currency TEXT NOT NULL,
            amount_minor INTEGER NOT NULL CHECK (amount_minor > 0),
            status TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed', 'canceled')),
            reason TEXT,
            psp_reference TEXT,
            failure_reason TEXT,
            netsuite_id TEXT,
            ns_sync TEXT NOT NULL DEFAULT 'pending' CHECK (ns_sync IN ('pending', 'synced', 'failed')),
            ns_error TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        ) STRICT;
        CREATE INDEX refunds_payment ON refunds(payment_id);
        CREATE UNIQUE INDEX refunds_psp_reference ON refunds(psp_reference)
            WHERE psp_reference IS NOT NULL;

        -- Money movements asked of Stripe: written before the call, closed after the answer.
        CREATE TABLE intents (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL CHECK (kind IN ('collect', 'capture', 'void', 'refund')),
            payment_id TEXT NOT NULL REFERENCES payments(id),
            refund_id TEXT REFERENCES refunds(id),
            amount_minor INTEGER,
            idempotency_key TEXT NOT NULL UNIQUE,
            params TEXT NOT NULL DEFAULT '{}',
            state TEXT NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'done', 'failed')),
            operator TEXT NOT NULL,
            reason TEXT,
            created_at TEXT NOT NULL,
            finished_at TEXT
        ) STRICT;
        CREATE INDEX intents_open ON intents(payment_id) WHERE state = 'open';

        -- What NetSuite has still to see, queued in the same transaction as the change.
        CREATE TABLE outbox (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL,
            record_id TEXT NOT NULL,
            depends_on INTEGER REFERENCES outbox(id),
            payload TEXT NOT NULL DEFAULT '{}',
            state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'synced', 'failed')),
            attempts INTEGER NOT NULL DEFAULT 0,
            last_error TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        ) STRICT;
        CREATE INDEX outbox_pending ON outbox(state, id);
        CREATE INDEX outbox_record ON outbox(record_id);

        CREATE TABLE audit (
            id INTEGER PRIMARY KEY,
            at TEXT NOT NULL,
            operator TEXT NOT NULL,
            action TEXT NOT NULL,
            subject_id TEXT,
            invoice_id TEXT,
            payment_id TEXT,
            refund_id TEXT,
            amount TEXT,
            currency TEXT,
            balance_before TEXT,
            balance_after TEXT,
            reason TEXT,
            stripe_ref TEXT,
            netsuite_ref TEXT,
            detail TEXT
        ) STRICT;
        CREATE INDEX audit_subject ON audit(subject_id);
        CREATE INDEX audit_invoice ON audit(invoice_id);
        CREATE INDEX audit_payment ON audit(payment_id);
        CREATE INDEX audit_at ON audit(at);
        CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
            BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
        CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
            BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;

        CREATE TABLE counters (
            name TEXT PRIMARY KEY,
            value INTEGER NOT NULL
        ) STRICT;
        """
    )


@migrations(name="0002_meta")
def _meta(db: Database) -> None:
    # Small named values the program keeps between runs, e.g. reconcile's Stripe cursor.
    db.executescript(
        """
        CREATE TABLE meta (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL
        ) STRICT;
        """
    )
