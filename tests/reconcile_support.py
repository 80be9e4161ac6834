"""Fixtures and helpers for the issue-5 suites: reconcile, log, pull, payments --expiring.

Everything runs end to end through the CLI against the local Stripe (``stripe_env``,
one per session, wiped per test) and a fresh local NetSuite per test (``ns_env``).
Outcomes are checked on the sandboxes' own state, read back with the official SDK or
the NetSuite sandbox's test API, and on the cache (``cli.snapshot()``).
"""

from __future__ import annotations

import json
import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from netsuite_fixtures import add_invoices, by_eid, ns, ns_env

from kollrefund.sandbox.netsuite_sandbox import NetSuiteSandbox

__all__ = ["by_eid", "ns", "ns_env"]

# INV-9 as in the seed's story; INV-12 for a second payment.
INVOICES = (("INV-9", "120.00"), ("INV-12", "100.00"))


@pytest.fixture
def world(cli: Any, stripe_env: Any, ns_env: NetSuiteSandbox) -> Any:
    """kollrefund pointed at both sandboxes, with INV-9 and INV-12 in NetSuite and the cache."""
    cli.ns = ns_env
    cli.stripe = stripe_env
    cli.ns_ids = add_invoices(cli, ns_env, *INVOICES)
    return cli


@pytest.fixture
def world_stripe(cli: Any, stripe_env: Any) -> Any:
    """kollrefund on the local Stripe only (no NetSuite configured), INV-9 and INV-12 imported."""
    lines = ["id,customer,currency,total", *(f"{i},Acme,usd,{t}" for i, t in INVOICES)]
    r = cli("import", str(cli.write("invoices.csv", "\n".join(lines) + "\n")))
    assert r.code == 0, r.err
    cli.stripe = stripe_env
    return cli


def ok(result: Any) -> Any:
    assert result.code == 0, (result.code, result.out, result.err)
    return result


def js(cli: Any, *args: str) -> Any:
    """Run a command with --json; assert exit 0; return the parsed output."""
    return ok(cli(*args, "--json")).json()


def collect(cli: Any, invoice: str, *extra: str) -> str:
    out = js(cli, "collect", invoice, "--payment-method", "pm_card_visa", "--yes", *extra)
    return str(out["payment"]["id"])


def refund(cli: Any, payment: str, *extra: str) -> str:
    return str(js(cli, "refund", payment, "--yes", *extra)["refund_id"])


def status(cli: Any, record: str) -> Any:
    return js(cli, "status", record)


def pi_of(cli: Any, payment: str) -> str:
    ref = status(cli, payment)["payment"]["psp_reference"]
    assert isinstance(ref, str) and ref.startswith("pi_")
    return ref


def reconcile(cli: Any, *extra: str) -> tuple[int, Any]:
    """``reconcile --json`` → (exit code, report); stderr must hold no error line."""
    r = cli("reconcile", "--json", *extra)
    assert r.code in (0, 8), (r.code, r.out, r.err)
    assert "Traceback" not in r.err and "error:" not in r.err, r.err
    return r.code, r.json()


def drift_of(report: Any, *, record: str | None = None) -> list[dict[str, Any]]:
    return [d for d in report["drift"] if record is None or d["record"] == record]


def one_error(r: Any, code: int = 2) -> str:
    """The command failed with ``code`` and said so in exactly one line on stderr, no traceback."""
    assert r.code == code, (r.code, r.out, r.err)
    assert "Traceback" not in r.err, r.err
    lines = [ln for ln in r.err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.err
    return lines[0]


def sqlite_on(path: Path) -> sqlite3.Connection:
    """A plain sqlite3 connection on the cache file, as an auditor (or a tamperer) would open it."""
    return sqlite3.connect(str(path), isolation_level=None)


def ns_invoice(ns: NetSuiteSandbox, nid: str) -> tuple[str, Decimal]:
    rec = ns.get("invoice", nid)
    return rec["status"]["refName"], Decimal(str(rec["amountRemaining"]))


def jsonl(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n") or text == ""
    return [json.loads(line) for line in text.splitlines()]
