"""Reading and checking import files (SPEC: Import files). No database, no network.

A file is read whole and every row checked before anything is written, so one
bad row changes nothing and every bad row is named with its line and reason.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

from kollrefund.errors import KollrefundError, UsageError
from kollrefund.money import Money, normalize_currency

INVOICE_REQUIRED = ("id", "customer", "currency", "total")
INVOICE_OPTIONAL = ("netsuite_id", "customer_netsuite_id", "stripe_customer", "issued_on", "due_on")
PAYMENT_REQUIRED = ("id", "invoice_id", "amount", "currency", "psp_reference")
PAYMENT_OPTIONAL = ("psp", "netsuite_id", "status")
PAYMENT_IMPORT_STATUSES = ("paid", "authorized")
KINDS = ("invoices", "payments")

# Ids become NetSuite external ids, which take letters, digits, '_' and '-' only.
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")
_MAX_ERRORS_SHOWN = 50


@dataclass
class RowErrors:
    """Every bad row of a file, as ``(where, reason)``; raised as one UsageError."""

    path: Path
    items: list[tuple[str, str]] = field(default_factory=list)

    def add(self, where: str, reason: str) -> None:
        self.items.append((where, reason))

    def raise_if_any(self) -> None:
        if not self.items:
            return
        n = len(self.items)
        lines = [f"{self.path.name}: {n} bad row{'s' if n != 1 else ''}; nothing was imported."]
        lines += [f"  {where}: {reason}" for where, reason in self.items[:_MAX_ERRORS_SHOWN]]
        if n > _MAX_ERRORS_SHOWN:
            lines.append(f"  … and {n - _MAX_ERRORS_SHOWN} more.")
        raise UsageError("\n".join(lines), hint=None)


@dataclass(frozen=True, slots=True)
class InvoiceRow:
    where: str
    id: str
    customer: str
    total: Money
    netsuite_id: str | None
    customer_netsuite_id: str | None
    stripe_customer: str | None
    issued_on: str | None
    due_on: str | None


@dataclass(frozen=True, slots=True)
class PaymentRow:
    where: str
    id: str
    invoice_id: str
    amount: Money
    psp_reference: str
    psp: str
    netsuite_id: str | None
    status: str


def _read_json(path: Path, text: str) -> tuple[list[str], list[tuple[str, dict[str, Any]]]]:
    try:
        data = json.loads(text, parse_float=Decimal)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"{path.name} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}."
        ) from None
    if not isinstance(data, list):
        raise UsageError(f"{path.name} must hold a JSON list of objects.")
    if not data:
        raise UsageError(f"{path.name} is empty; there is nothing to import.")
    rows: list[tuple[str, dict[str, Any]]] = []
    columns: dict[str, None] = {}
    for i, item in enumerate(data, start=1):
        if not isinstance(item, dict):
            raise UsageError(f"{path.name}: item {i} is not an object.")
        for k in item:
            columns.setdefault(k, None)
        rows.append((f"item {i}", item))
    return list(columns), rows


def _read_csv(path: Path, text: str) -> tuple[list[str], list[tuple[str, dict[str, Any]]]]:
    reader = csv.reader(text.splitlines(), strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise UsageError(f"{path.name} is empty; there is nothing to import.") from None
    except csv.Error as exc:
        raise UsageError(f"{path.name} is not valid CSV: {exc}.") from None
    header = [h.strip() for h in header]
    if len(set(header)) != len(header):
        raise UsageError(f"{path.name} repeats a column in its header.")
    rows: list[tuple[str, dict[str, Any]]] = []
    width = len(header)
    try:
        for values in reader:
            where = f"line {reader.line_num}"
            if not values or all(not v.strip() for v in values):
                continue
            if len(values) != width:
                raise UsageError(
                    f"{path.name}: {where} has {len(values)} fields where the header has {width}; nothing was imported."
                )
            rows.append((where, dict(zip(header, values, strict=True))))
    except csv.Error as exc:
        raise UsageError(f"{path.name} is not valid CSV at line {reader.line_num}: {exc}.") from None
    if not rows:
        raise UsageError(f"{path.name} has a header but no rows; there is nothing to import.")
    return header, rows


def read_file(path: Path, kind: str | None = None) -> tuple[str, list[tuple[str, dict[str, Any]]]]:
    """Read a CSV or JSON file; recognise invoices or payments by their columns."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"No file {path}.") from None
    except OSError as exc:
        raise UsageError(f"Cannot read {path}: {exc.strerror}.") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UsageError(f"{path.name} is not UTF-8 text.") from None
    if not text.strip():
        raise UsageError(f"{path.name} is empty; there is nothing to import.")
    looks_json = path.suffix.lower() == ".json" or text.lstrip()[:1] in "[{"
    columns, rows = _read_json(path, text) if looks_json else _read_csv(path, text)
    if kind is None:
        kind = "payments" if "invoice_id" in columns else "invoices"
    required, optional = (
        (PAYMENT_REQUIRED, PAYMENT_OPTIONAL) if kind == "payments" else (INVOICE_REQUIRED, INVOICE_OPTIONAL)
    )
    missing = [c for c in required if c not in columns]
    if missing:
        raise UsageError(
            f"{path.name} lacks the column{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
            f"that {kind} need (required: {', '.join(required)})."
        )
    unknown = [c for c in columns if c not in required and c not in optional]
    if unknown:
        raise UsageError(
            f"{path.name} has unknown column{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} for {kind} "
            f"(known: {', '.join(required + optional)})."
        )
    return kind, rows


def _text(row: dict[str, Any], key: str) -> str | None:
    v = row.get(key)
    if v is None:
        return None
    s = str(v).strip()
    return s or None


def _check_id(value: str | None, what: str) -> str:
    if value is None:
        raise UsageError(f"{what} is empty")
    if not _ID.match(value):
        raise UsageError(f"{what} {value!r} may hold only letters, digits, '_' and '-'")
    return value


def _check_date(value: str | None, what: str) -> str | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        raise UsageError(f"{what} {value!r} is not a date like 2026-11-25") from None


def _amount(row: dict[str, Any], key: str, currency: str) -> Money:
    raw = row.get(key)
    if isinstance(raw, bool) or raw is None or (isinstance(raw, str) and not raw.strip()):
        raise UsageError(f"{key} is empty")
    if isinstance(raw, float):  # json.loads gives Decimal for floats; a float here means a bug
        raise UsageError(f"{key} must be a decimal string")
    money = Money.parse(raw if isinstance(raw, (int, Decimal)) else str(raw), currency)
    if money.minor <= 0:
        raise UsageError(f"{key} must be more than zero, not {money.format()}")
    return money


def _reason(exc: KollrefundError) -> str:
    return exc.message.rstrip(".")


def parse_invoices(path: Path, rows: list[tuple[str, dict[str, Any]]]) -> list[InvoiceRow]:
    errors = RowErrors(path)
    seen: dict[str, str] = {}
    out: list[InvoiceRow] = []
    currencies: dict[str, str] = {}
    for where, row in rows:
        try:
            inv_id = _check_id(_text(row, "id"), "id")
            if inv_id in seen:
                raise UsageError(f"id {inv_id} is already on {seen[inv_id]}")
            seen[inv_id] = where
            customer = _text(row, "customer")
            if customer is None:
                raise UsageError("customer is empty")
            raw_cur = _text(row, "currency") or ""
            cur = currencies.get(raw_cur)
            if cur is None:
                cur = currencies[raw_cur] = normalize_currency(raw_cur)
            out.append(
                InvoiceRow(
                    where=where,
                    id=inv_id,
                    customer=customer,
                    total=_amount(row, "total", cur),
                    netsuite_id=_text(row, "netsuite_id"),
                    customer_netsuite_id=_text(row, "customer_netsuite_id"),
                    stripe_customer=_text(row, "stripe_customer"),
                    issued_on=_check_date(_text(row, "issued_on"), "issued_on"),
                    due_on=_check_date(_text(row, "due_on"), "due_on"),
                )
            )
        except KollrefundError as exc:
            errors.add(where, _reason(exc))
    errors.raise_if_any()
    return out


def parse_payments(path: Path, rows: list[tuple[str, dict[str, Any]]]) -> list[PaymentRow]:
    errors = RowErrors(path)
    seen: dict[str, str] = {}
    refs: dict[str, str] = {}
    out: list[PaymentRow] = []
    for where, row in rows:
        try:
            pay_id = _check_id(_text(row, "id"), "id")
            if pay_id in seen:
                raise UsageError(f"id {pay_id} is already on {seen[pay_id]}")
            seen[pay_id] = where
            invoice_id = _check_id(_text(row, "invoice_id"), "invoice_id")
            cur = normalize_currency(_text(row, "currency") or "")
            ref = _text(row, "psp_reference")
            if ref is None:
                raise UsageError("psp_reference is empty")
            if ref in refs:
                raise UsageError(f"psp_reference {ref} is already on {refs[ref]}")
            refs[ref] = where
            status = (_text(row, "status") or "paid").lower()
            if status not in PAYMENT_IMPORT_STATUSES:
                raise UsageError(f"status {status!r} is not one of {', '.join(PAYMENT_IMPORT_STATUSES)}")
            out.append(
                PaymentRow(
                    where=where,
                    id=pay_id,
                    invoice_id=invoice_id,
                    amount=_amount(row, "amount", cur),
                    psp_reference=ref,
                    psp=(_text(row, "psp") or "stripe").lower(),
                    netsuite_id=_text(row, "netsuite_id"),
                    status=status,
                )
            )
        except KollrefundError as exc:
            errors.add(where, _reason(exc))
    errors.raise_if_any()
    return out
