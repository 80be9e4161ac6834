"""`kollrefund sync` killed (SIGKILL) mid-run, then run again: nothing duplicated, nothing lost.

The sync runs in a child process (`python -m kollrefund sync --yes`) that kills itself at a
named fault point (KOLLREFUND_CRASH_AT), or that this test kills while NetSuite is still
answering; the rerun happens in-process and everything is checked on the sandbox.
"""

from __future__ import annotations

import signal
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
    run_cli,
    spawn_cli,
    status,
    stripe_local,
    stripe_on,
    sync,
)

from kollrefund.sandbox.netsuite_sandbox import NetSuiteSandbox

__all__ = ["ns", "ns_env", "stripe_local", "stripe_on"]  # fixtures, re-exported for pytest

PAYMENT_POINTS = ["sync.before_put", "sync.after_put", "sync.local_commit", "sync.before_read_back"]
REFUND_POINTS = ["sync.before_patch", "sync.after_patch", "sync.before_put", "sync.after_put",
                 "sync.local_commit", "sync.before_read_back"]


def crash_sync(point: str) -> None:
    proc = run_cli("sync", "--yes", env={"KOLLREFUND_CRASH_AT": point})
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stdout, proc.stderr)


@pytest.mark.parametrize("point", PAYMENT_POINTS)
def test_payments_killed_at_each_point(cli: Any, ns_env: NetSuiteSandbox, point: str) -> None:
    ns = ns_env
    ids = add_invoices(cli, ns, ("INV-1", "10.00"), ("INV-2", "20.00"), ("INV-3", "30.00"))
    import_payments(cli, ("PAY-1", "INV-1", "10.00"), ("PAY-2", "INV-2", "20.00"), ("PAY-3", "INV-3", "5.00"))
    crash_sync(point)
    assert ns.stats.total > 0 or point == "sync.before_put"

    r = sync(cli)
    assert r.code == 0, r.out + r.err
    assert_no_duplicates(ns)
    assert sorted(by_eid(ns, "customerPayment")) == ["PAY-1", "PAY-2", "PAY-3"]
    assert ns_invoice(ns, ids["INV-1"]) == ("Paid In Full", Decimal(0))
    assert ns_invoice(ns, ids["INV-3"]) == ("Open", Decimal("25.00"))
    assert all(status(cli, p)["payment"]["netsuite"]["sync"] == "synced" for p in ("PAY-1", "PAY-2", "PAY-3"))
    ns.reset_stats()
    assert sync(cli).code == 0 and ns.stats.total == 0  # nothing left over


@pytest.mark.parametrize("point", REFUND_POINTS)
def test_refunds_killed_at_each_point(cli: Any, ns_env: NetSuiteSandbox, stripe_on: Any, point: str) -> None:
    """Two partial refunds of a synced payment, and a new payment refunded before its first sync."""
    ns = ns_env
    ids = add_invoices(cli, ns, ("INV-9", "120.00"), ("INV-10", "40.00"))
    pay = collect(cli, "INV-9")
    assert sync(cli).code == 0
    rf1 = refund(cli, pay, "--amount", "20.00")
    rf2 = refund(cli, pay, "--amount", "30.00")
    other = collect(cli, "INV-10")
    rf3 = refund(cli, other, "--amount", "15.00")
    crash_sync(point)

    r = sync(cli)
    assert r.code == 0, r.out + r.err
    assert_no_duplicates(ns)
    assert sorted(by_eid(ns, "customerRefund")) == sorted([rf1, rf2, rf3])
    assert sorted(by_eid(ns, "customerPayment")) == sorted([pay, other])
    assert ns_invoice(ns, ids["INV-9"]) == ("Open", Decimal("50.00"))
    assert ns_invoice(ns, ids["INV-10"]) == ("Open", Decimal("15.00"))
    for p in (pay, other):
        st = status(cli, p)
        assert st["payment"]["netsuite"]["sync"] == "synced"
        assert all(rf["netsuite"]["sync"] == "synced" for rf in st["refunds"])
    ns.reset_stats()
    assert sync(cli).code == 0 and ns.stats.total == 0


def test_killed_after_a_later_refund_reached_netsuite(cli: Any, ns_env: NetSuiteSandbox, stripe_on: Any) -> None:
    """Killed from outside (cron's timeout, OOM) while NetSuite records the second refund of a
    payment, before the first is marked synced here: the rerun must not ask NetSuite to apply
    the payment again for more than the refunds there leave (which it refuses: stuck forever)."""
    ns = ns_env
    nid = add_invoices(cli, ns, ("INV-9", "120.00"))["INV-9"]
    pay = collect(cli, "INV-9")
    assert sync(cli).code == 0
    rf1 = refund(cli, pay, "--amount", "20.00")
    rf2 = refund(cli, pay, "--amount", "30.00")
    ns.set_latency(400)
    child = spawn_cli("sync", "--yes")
    deadline = time.monotonic() + 30
    while ns.stats.count("PUT", f"customerRefund/eid:{rf2}") == 0:
        assert child.poll() is None and time.monotonic() < deadline, child.communicate()
        time.sleep(0.005)
    child.kill()  # NetSuite is still working on it: it commits RF-2, nobody hears the answer
    child.communicate()
    time.sleep(0.5)
    ns.set_latency(0)
    assert sorted(by_eid(ns, "customerRefund")) == sorted([rf1, rf2])
    assert all(rf["netsuite"]["sync"] == "pending" for rf in status(cli, pay)["refunds"])

    r = sync(cli)
    assert r.code == 0, r.out + r.err
    assert_no_duplicates(ns)
    assert ns_invoice(ns, nid) == ("Open", Decimal("50.00"))
    rec = ns.get("customerPayment", by_eid(ns, "customerPayment")[pay][0]["id"])
    assert [Decimal(str(ln["amount"])) for ln in apply_lines(rec) if ln["apply"]] == [Decimal("70.00")]
