"""Result objects the actions hand back and the renderer shows. Plain data, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field

from kollrefund.domain import Invoice, Payment, Refund
from kollrefund.store import SyncState


@dataclass(frozen=True, slots=True)
class RefundView:
    refund: Refund
    sync: SyncState


@dataclass(frozen=True, slots=True)
class PaymentView:
    payment: Payment
    sync: SyncState
    refunds: list[RefundView] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class InvoiceView:
    invoice: Invoice
    sync: SyncState
    payments: list[PaymentView] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ImportResult:
    kind: str
    file: str
    added: int
    unchanged: int
    updated: int
    dry_run: bool
    changes: list[str] = field(default_factory=list)
