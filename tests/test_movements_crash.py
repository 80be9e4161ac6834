"""Exactly once through crashes and concurrent runs: the CLI as a real process.

Each crash test runs ``python -m kollrefund`` in a subprocess that kills itself
with SIGKILL at a named point (``KOLLREFUND_CRASH_AT``, see ``faults.py``), or
that the test kills while the local Stripe holds a committed answer; then the
same command again, or ``resume``, must leave exactly one refund, PaymentIntent
or capture in Stripe and a cache that agrees with it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from movement_support import (  # _cli_built_once: an autouse fixture
    _cli_built_once,  # noqa: F401
    assert_consistent,
    collect,
    error_line,
    load_invoices,
    pi_of,
    status,
    stripe_pis,
    stripe_refunds,
)

pytestmark = pytest.mark.slow


def _env(crash_at: str | None) -> dict[str, str]:
    env = dict(os.environ)  # home + stripe_env have pointed it at the cache and the sandbox
    env.pop("KOLLREFUND_CRASH_AT", None)
    if crash_at:
        env["KOLLREFUND_CRASH_AT"] = crash_at
    return env


def start(home: Path, *args: str, crash_at: str | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "kollrefund", *args], cwd=home, env=_env(crash_at),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def _polling_a_lock(proc: subprocess.Popen[str]) -> bool:
    """The process sleeps between tries of the payment's file lock (the only place it sleeps before Stripe)."""
    try:
        with open(f"/proc/{proc.pid}/wchan") as f:
            return f.read().strip() in ("hrtimer_nanosleep", "do_nanosleep")
    except OSError:  # no /proc: give it a moment instead
        time.sleep(1.0)
        return True


@pytest.fixture
def ready(cli: Any, stripe_env: Any) -> Any:
    load_invoices(cli)
    return cli


REFUND = ("refund", "PAY-1", "--amount", "20.00", "--reason", "duplicate", "--yes")
CAPTURE = ("capture", "PAY-1", "--amount", "80.00", "--yes")
VOID = ("void", "PAY-1", "--yes")
COLLECT = ("collect", "INV-9", "--payment-method", "pm_card_visa", "--amount", "70.00", "--yes")

# (crash point, then: the same command again or `resume`, its exit status)
CRASHES = [
    ("refund.intent_recorded", "same", 0),  # Stripe never heard: resent with the same key
    ("refund.stripe_answered", "same", 0),  # Stripe refunded: found by metadata, not sent again
    ("refund.local_commit", "resume", 0),  # all done: nothing to resume
    ("capture.intent_recorded", "same", 0),
    ("capture.stripe_answered", "resume", 0),
    ("capture.local_commit", "same", 4),  # already captured: refused, nothing changed
    ("void.intent_recorded", "same", 0),  # Stripe never heard: canceled on the rerun
    ("void.stripe_answered", "same", 0),
    ("void.local_commit", "same", 4),  # already canceled: refused, nothing changed
    ("collect.intent_recorded", "same", 0),
    ("collect.stripe_answered", "same", 0),
    ("collect.local_commit", "same", 4),  # 70.00 is more than the 50.00 still open
]


@pytest.mark.parametrize(("point", "then", "code"), CRASHES, ids=[c[0] for c in CRASHES])
def test_crash_at_every_point_then_rerun(ready: Any, stripe_client: Any, point: str, then: str, code: int) -> None:
    cli = ready
    kind = point.split(".")[0]
    if kind == "refund":
        collect(cli, "INV-9")
    elif kind in ("capture", "void"):
        collect(cli, "INV-9", "--manual-capture")
    command = {"refund": REFUND, "capture": CAPTURE, "void": VOID, "collect": COLLECT}[kind]

    proc = start(cli.home, *command, crash_at=point)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, out, err)

    snap = cli.snapshot()
    r = cli(*command) if then == "same" else cli("resume")
    assert r.code == code, r.err
    if code == 4:
        error_line(r.err)
        assert cli.snapshot() == snap  # the crash had finished everything; the rerun changed nothing
    elif then == "resume" and point.endswith("local_commit"):
        assert r.out.strip() == "Nothing to resume."
    elif then == "resume" or not point.endswith("local_commit"):
        assert "Recovered" in r.out or "unfinished" in r.out, r.out

    if kind == "refund":
        [sr] = stripe_refunds(stripe_client, pi_of(cli, "PAY-1"))
        assert (sr.amount, sr.reason, sr.metadata.to_dict()) == (2000, "duplicate", {"kollrefund_refund_id": "RF-1"})
        view = assert_consistent(cli, stripe_client, "PAY-1")
        assert [rf["id"] for rf in view["refunds"]] == ["RF-1"]
        assert view["payment"]["status"] == "partially_refunded"
        assert status(cli, "INV-9")["invoice"]["balance"] == "20.00"
    elif kind == "capture":
        pi = stripe_client.v1.payment_intents.retrieve(pi_of(cli, "PAY-1"))
        assert (pi.status, pi.amount_received) == ("succeeded", 8000)
        view = assert_consistent(cli, stripe_client, "PAY-1")
        assert (view["payment"]["status"], view["payment"]["captured"]) == ("paid", "80.00")
        assert status(cli, "INV-9")["invoice"]["balance"] == "40.00"
    elif kind == "void":
        pi = stripe_client.v1.payment_intents.retrieve(pi_of(cli, "PAY-1"))
        assert pi.status == "canceled"
        view = assert_consistent(cli, stripe_client, "PAY-1")
        assert view["payment"]["status"] == "canceled"
        assert status(cli, "INV-9")["invoice"]["status"] == "unpaid"
    else:
        [pi] = stripe_pis(stripe_client)
        assert pi.metadata.to_dict() == {"kollrefund_payment_id": "PAY-1", "kollrefund_invoice_id": "INV-9"}
        view = assert_consistent(cli, stripe_client, "PAY-1")
        assert (view["payment"]["psp_reference"], view["payment"]["status"]) == (pi.id, "paid")
        inv = status(cli, "INV-9")
        assert [p["id"] for p in inv["payments"]] == ["PAY-1"]
        assert (inv["invoice"]["balance"], inv["invoice"]["status"]) == ("50.00", "partially_paid")
    assert cli("resume").out.strip() == "Nothing to resume."


def test_killed_while_stripe_holds_the_committed_refund(ready: Any, stripe_client: Any, stripe_env: Any) -> None:
    cli, sb = ready, stripe_env
    collect(cli, "INV-9")
    pi = pi_of(cli, "PAY-1")
    sb.faults.add(method="POST", path=r"^/v1/refunds$", action="hold")
    proc = start(cli.home, "refund", "PAY-1", "--yes")
    try:
        wait_for(lambda: sb.faults.held_count == 1)
        [committed] = stripe_refunds(stripe_client, pi)  # Stripe has refunded; the answer is held
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    wait_for(lambda: sb.faults.held_count == 0)
    sb.faults.release_held()
    assert proc.returncode == -signal.SIGKILL
    assert status(cli, "PAY-1")["refunds"][0]["status"] == "pending"  # the intent, not yet the answer

    r = cli("refund", "PAY-1", "--yes", "--json")  # the same command again
    assert r.code == 0, r.err
    out = r.json()
    assert out["refund_id"] == "RF-1" and len(out["recovered"]) == 1
    assert "metadata" in out["recovered"][0]
    assert [x.id for x in stripe_refunds(stripe_client, pi)] == [committed.id]
    view = assert_consistent(cli, stripe_client, "PAY-1")
    assert (view["payment"]["status"], view["refunds"][0]["status"]) == ("refunded", "succeeded")
    assert status(cli, "INV-9")["invoice"]["balance"] == "120.00"


def test_two_refunds_of_one_payment_at_once(ready: Any, stripe_client: Any, stripe_env: Any) -> None:
    cli, sb = ready, stripe_env
    collect(cli, "INV-9")
    pi = pi_of(cli, "PAY-1")
    sb.faults.add(method="POST", path=r"^/v1/refunds$", action="stall")  # the first waits inside Stripe
    first = start(cli.home, "refund", "PAY-1", "--amount", "70.00", "--yes")
    second: subprocess.Popen[str] | None = None
    try:
        wait_for(lambda: sb.faults.held_count == 1)  # the first holds the payment's lock
        second = start(cli.home, "refund", "PAY-1", "--amount", "60.00", "--yes")
        wait_for(lambda: _polling_a_lock(second), timeout=20)  # the second waits for the first
        assert second.poll() is None
        assert stripe_refunds(stripe_client, pi) == []
        sb.faults.release_held()
        _, err1 = first.communicate(timeout=30)
        _, err2 = second.communicate(timeout=30)
    finally:
        sb.faults.release_held()
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert first.returncode == 0, err1
    assert second.returncode == 4, err2
    line = error_line(err2)
    assert "60.00" in line and "50.00" in line and "PAY-1" in line
    assert [x.amount for x in stripe_refunds(stripe_client, pi)] == [7000]
    assert_consistent(cli, stripe_client, "PAY-1")
    # what remains can still be refunded, and never more than was captured
    assert cli("refund", "PAY-1", "--yes").code == 0
    assert sum(x.amount for x in stripe_refunds(stripe_client, pi)) == 12000
    assert_consistent(cli, stripe_client, "PAY-1")
