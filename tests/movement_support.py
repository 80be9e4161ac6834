"""Helpers shared by the end-to-end money-movement suites (test_movements*.py).

Everything goes through the CLI against the local Stripe (``stripe_env``), with a
real SQLite cache; Stripe is read back with the official SDK.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

INVOICES = """id,customer,currency,total
INV-9,Acme,usd,120.00
INV-10,Globex,jpy,1500
INV-11,Initech,kwd,10.250
INV-12,Umbrella,usd,100.00
"""

EXPONENT = {"usd": 2, "jpy": 0, "kwd": 3}


def minor(amount: str, currency: str) -> int:
    return int(Decimal(amount).scaleb(EXPONENT[currency]))


def load_invoices(cli: Any) -> None:
    r = cli("import", str(cli.write("invoices.csv", INVOICES)))
    assert r.code == 0, r.err


def collect(cli: Any, invoice: str, *extra: str, pm: str = "pm_card_visa") -> dict[str, Any]:
    """``collect`` with --yes --json; returns the JSON (asserts success)."""
    r = cli("collect", invoice, "--payment-method", pm, "--yes", "--json", *extra)
    assert r.code == 0, r.err
    out: dict[str, Any] = r.json()
    return out


def status(cli: Any, record_id: str) -> dict[str, Any]:
    r = cli("status", record_id, "--json")
    assert r.code == 0, r.err
    out: dict[str, Any] = r.json()
    return out


def pi_of(cli: Any, payment_id: str) -> str:
    ref = status(cli, payment_id)["payment"]["psp_reference"]
    assert isinstance(ref, str) and ref.startswith("pi_"), ref
    return ref


def stripe_refunds(client: Any, pi: str) -> list[Any]:
    return list(client.v1.refunds.list(params={"payment_intent": pi, "limit": 100}).auto_paging_iter())


def stripe_pis(client: Any) -> list[Any]:
    return list(client.v1.payment_intents.list(params={"limit": 100}).auto_paging_iter())


def stripe_state(client: Any, pi: str | None = None) -> Any:
    """Everything Stripe holds that a refused command must leave alone."""
    pis = stripe_pis(client)
    return sorted(
        (p.id, p.status, p.amount_received, p.amount_capturable,
         tuple(sorted((r.id, r.amount, r.status) for r in stripe_refunds(client, p.id))))
        for p in pis
    )


def error_line(err: str) -> str:
    """The one error line on stderr (a refused movement may show its plan above it)."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, err
    assert lines[-1] == errors[0], err
    return errors[0]


def assert_consistent(cli: Any, client: Any, payment_id: str) -> dict[str, Any]:
    """The cache agrees with Stripe about one payment, and the invoice follows SPEC's balance rule."""
    view = status(cli, payment_id)
    p = view["payment"]
    cur = p["currency"]
    pi = client.v1.payment_intents.retrieve(p["psp_reference"])
    refunds = stripe_refunds(client, pi.id)
    counted = sum(r.amount for r in refunds if r.status in ("pending", "requires_action", "succeeded"))
    assert minor(p["refunded"], cur) == counted, (p, refunds)
    captured = pi.amount_received if pi.status == "succeeded" else 0
    assert minor(p["captured"], cur) == captured, (p, pi)
    # one local refund per Stripe refund, matched by metadata and by id
    local = {r["id"]: r for r in view["refunds"]}
    assert len(local) == len(refunds), (local, refunds)
    by_ref = {r["psp_reference"]: r["id"] for r in view["refunds"]}
    for r in refunds:
        # ours by metadata; one made outside kollrefund (no metadata) by its Stripe id
        rid = r.metadata.to_dict().get("kollrefund_refund_id") or by_ref.get(r.id)
        assert rid in local, (rid, local)
        assert local[rid]["psp_reference"] == r.id
        assert minor(local[rid]["amount"], cur) == r.amount
    breakdown = status(cli, p["invoice_id"])
    inv, payments = breakdown["invoice"], breakdown["payments"]
    balance = minor(inv["total"], cur) - sum(
        minor(q["captured"], cur) - minor(q["refunded"], cur) for q in payments)
    assert minor(inv["balance"], cur) == balance, inv
    want = "unpaid" if balance == minor(inv["total"], cur) else "paid" if balance == 0 else "partially_paid"
    assert inv["status"] == want, inv
    r = cli("resume", "--dry-run", "--json")
    assert r.code == 0 and r.json()["open"] == [], r.out
    return view


@pytest.fixture(scope="module", autouse=True)
def _cli_built_once() -> Iterator[None]:
    """Build the Typer command once, as a real process does, not once per in-process call (~0.1 s each)."""
    import typer.main

    original = typer.main.get_command
    built: dict[int, Any] = {}

    def once(app: Any) -> Any:
        if id(app) not in built:
            built[id(app)] = original(app)
        return built[id(app)]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(typer.main, "get_command", once)
        yield
