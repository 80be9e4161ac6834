"""What a person sees on a terminal: nothing cut off at any width."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from rich.console import Console

from kollrefund import domain as d
from kollrefund import render
from kollrefund.money import Money
from kollrefund.store import SyncState
from kollrefund.views import PaymentView

AT = datetime(2026, 11, 25, 20, 41, 7, tzinfo=UTC)


def view() -> PaymentView:
    p = d.capture(d.new_payment(id="PAY-123", invoice_id="INV-9", amount=Money(12000, "usd"),
                                psp_reference="pi_3MtwBwLkdIwHu7ix28a3tqPa", at=AT), at=AT)
    return PaymentView(p, SyncState("2051", "synced"))


@pytest.mark.parametrize("width", [60, 80, 100, 123, 124, 160])
def test_payment_fields_are_whole_at_every_terminal_width(monkeypatch: pytest.MonkeyPatch, width: int) -> None:
    monkeypatch.setattr(render, "plain_output", lambda stream=None: False)
    out = Console(width=width, record=True, force_terminal=True, color_system=None)
    out.print(render.payments_output(out, [view()], title="Payments applied"))
    text = out.export_text()
    assert "…" not in text
    for whole in ("PAY-123", "pi_3MtwBwLkdIwHu7ix28a3tqPa", "120.00 USD", "2026-11-25T20:41:07Z", "2051"):
        assert whole in text, (width, whole, text)
    assert max(len(line) for line in text.splitlines()) <= width
