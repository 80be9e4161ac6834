"""Fixtures and helpers for the end-to-end `kollrefund sync` suites (test_sync*.py).

Import what a module needs with ``from netsuite_fixtures import *``-style names:

- ``ns``: a fresh local NetSuite per test (in-process, starts in milliseconds), so local
  ids such as PAY-1 never meet a record another test left behind;
- ``ns_env``: kollrefund pointed at it (credentials, accounts, no backoff);
- ``stripe_local`` / ``stripe_on``: one local Stripe per module, for payments and
  refunds made through ``collect`` / ``refund`` (only tests that need refunds use it).

Everything is checked on the sandbox's own state (``ns.get`` / ``ns.records``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from kollrefund.sandbox.netsuite_sandbox import NetSuiteSandbox

SRC = str(Path(__file__).resolve().parents[1] / "src")
ACCOUNTS = {
    "KOLLREFUND_NETSUITE__PAYMENT_ACCOUNT_ID": "1",
    "KOLLREFUND_NETSUITE__REFUND_ACCOUNT_ID": "2",
    "KOLLREFUND_NETSUITE__REFUND_PAYMENT_METHOD_ID": "3",
}
CUSTOMER = "4"


@pytest.fixture
def ns() -> Iterator[NetSuiteSandbox]:
    with NetSuiteSandbox("1234567_SB1") as sandbox:
        yield sandbox


@pytest.fixture
def ns_env(home: Path, ns: NetSuiteSandbox, monkeypatch: pytest.MonkeyPatch) -> NetSuiteSandbox:
    for name, value in {**ns.env(), **ACCOUNTS}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("KOLLREFUND_NO_BACKOFF", "1")
    return ns


@pytest.fixture(scope="module")
def stripe_local() -> Iterator[Any]:
    from kollrefund.sandbox.stripe_sandbox import StripeSandbox

    with StripeSandbox() as sb:
        yield sb


@pytest.fixture
def stripe_on(home: Path, stripe_local: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    for name, value in stripe_local.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("KOLLREFUND_STRIPE__MAX_NETWORK_RETRIES", "2")
    yield stripe_local
    stripe_local.faults.clear()


# -- building state ------------------------------------------------------------------


def add_invoices(cli: Any, ns: NetSuiteSandbox, *invoices: tuple[str, str], currency: str = "usd") -> dict[str, str]:
    """Create each (id, total) in NetSuite and import it locally with its netsuite ids."""
    ids = {}
    lines = ["id,customer,currency,total,netsuite_id,customer_netsuite_id"]
    for inv_id, total in invoices:
        ids[inv_id] = ns.add_invoice(external_id=inv_id, customer_id=CUSTOMER, total=Decimal(total),
                                     currency=currency.upper())
        lines.append(f"{inv_id},Acme,{currency},{total},{ids[inv_id]},{CUSTOMER}")
    r = cli("import", str(cli.write(f"invoices-{len(ids)}-{next(iter(ids))}.csv", "\n".join(lines) + "\n")))
    assert r.code == 0, r.err
    return ids


def import_payments(cli: Any, *payments: tuple[str, str, str], currency: str = "usd") -> None:
    """Import each (payment id, invoice id, amount) as a paid card payment: queued for sync."""
    lines = ["id,invoice_id,amount,currency,psp_reference"]
    lines += [f"{pid},{inv},{amount},{currency},pi_{pid.replace('-', '')}" for pid, inv, amount in payments]
    r = cli("import", str(cli.write(f"payments-{payments[0][0]}.csv", "\n".join(lines) + "\n")))
    assert r.code == 0, r.err


def collect(cli: Any, invoice: str, *extra: str) -> str:
    r = cli("collect", invoice, "--payment-method", "pm_card_visa", "--yes", "--json", *extra)
    assert r.code == 0, r.err
    return str(r.json()["payment"]["id"])


def refund(cli: Any, payment: str, *extra: str) -> str:
    r = cli("refund", payment, "--yes", "--json", *extra)
    assert r.code == 0, r.err
    return str(r.json()["refund_id"])


def status(cli: Any, record: str) -> dict[str, Any]:
    r = cli("status", record, "--json")
    assert r.code == 0, r.err
    out: dict[str, Any] = r.json()
    return out


def sync(cli: Any, *extra: str) -> Any:
    return cli("sync", "--yes", *extra)


# -- reading the sandbox ---------------------------------------------------------------


def ns_invoice(ns: NetSuiteSandbox, internal_id: str) -> tuple[str, Decimal]:
    rec = ns.get("invoice", internal_id)
    return rec["status"]["refName"], Decimal(str(rec["amountRemaining"]))


def by_eid(ns: NetSuiteSandbox, record_type: str) -> dict[str, list[dict[str, Any]]]:
    """External id -> every record carrying it (a duplicate shows as a list of two)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for rec in ns.records(record_type):
        out.setdefault(str(rec.get("externalId")), []).append(rec)
    return out


def apply_lines(rec: dict[str, Any]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = (rec.get("apply") or {}).get("items", [])
    return items


def assert_no_duplicates(ns: NetSuiteSandbox) -> None:
    for rtype in ("customerPayment", "customerRefund"):
        for eid, recs in by_eid(ns, rtype).items():
            assert len(recs) == 1, f"{len(recs)} {rtype} records with externalId {eid}"


# -- subprocesses ----------------------------------------------------------------------


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`python -m kollrefund ARGS` in a child process with this process's environment."""
    full = {**os.environ, **(env or {})}
    full["PYTHONPATH"] = os.pathsep.join(p for p in (SRC, full.get("PYTHONPATH")) if p)
    full["NO_COLOR"] = "1"
    return subprocess.run([sys.executable, "-m", "kollrefund", *args], env=full, capture_output=True, text=True,
                          timeout=timeout, check=False)


def spawn_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    full = {**os.environ, **(env or {})}
    full["PYTHONPATH"] = os.pathsep.join(p for p in (SRC, full.get("PYTHONPATH")) if p)
    full["NO_COLOR"] = "1"
    return subprocess.Popen([sys.executable, "-m", "kollrefund", *args], env=full, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
