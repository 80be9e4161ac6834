"""The records of the local NetSuite: invoices, customer payments, customer refunds.

Only what kollrefund touches is modelled, with the accounting rules that make the refund
flow observable: an invoice's amountPaid / amountRemaining / status derive from the
customerPayment `apply` lines pointing at it; a payment's unapplied credit is what neither
its invoice lines nor the customerRefunds applied to it use. Sources are in
/work/shared/reference/netsuite-rest.md ("ref §n"); [S] = a source says so, [I] = inferred.
"""

from __future__ import annotations

import copy
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

RECORD_TYPES = ("invoice", "customerPayment", "customerRefund")
_CANONICAL = {t.lower(): t for t in RECORD_TYPES}
# [S] External IDs may contain only letters, digits, `_` and `-` (ref §3, section_156334828635).
EXTERNAL_ID_RE = re.compile(r"^[A-Za-z0-9_-]+$")
ZERO = Decimal("0")

# NetSuite's internal ids come from one sequence per record family; transactions share
# one [I]. Starting above 100 makes ids look like the docs' samples ("104").
_FIRST_ID = 101

# [S] invoice statuses: CustInvc:A Open, CustInvc:B Paid In Full (ref §2, prolecto list).
INVOICE_OPEN = ("A", "Open")
INVOICE_PAID = ("B", "Paid In Full")


class NsError(Exception):
    """A NetSuite error response: HTTP status, o:errorCode and detail (ref §3 error bodies)."""

    def __init__(self, status: int, code: str, detail: str, *, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}


def user_error(detail: str) -> NsError:
    return NsError(400, "USER_ERROR", detail)


def canonical_type(name: str) -> str:
    """Record type names are matched case-insensitively [I: the docs are silent]."""
    try:
        return _CANONICAL[name.lower()]
    except KeyError:
        raise NsError(404, "INVALID_RCRD_TYPE", f"Record type '{name}' does not exist or is not supported.") from None


def parse_amount(value: Any, what: str) -> Decimal:
    """Amounts arrive as JSON numbers (parsed to Decimal) or strings; never floats inside."""
    if isinstance(value, bool) or value is None:
        raise user_error(f"Invalid number for field {what}: {value!r}.")
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise user_error(f"Invalid number for field {what}: {value!r}.") from None
    if not amount.is_finite():
        raise user_error(f"Invalid number for field {what}: {value!r}.")
    return amount


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Line:
    """One `apply` sublist line, keyed by `doc` [S] (ref §2 customerRefund, §3 sublists)."""

    doc: str
    apply: bool = True
    amount: Decimal | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Record:
    type: str
    id: str
    fields: dict[str, Any] = field(default_factory=dict)  # body fields as sent (refs as dicts)
    apply: list[Line] = field(default_factory=list)
    created: str = field(default_factory=_now)
    modified: str = field(default_factory=_now)

    @property
    def external_id(self) -> str | None:
        value = self.fields.get("externalId")
        return str(value) if value is not None else None


def _ref_id(value: Any) -> str | None:
    if isinstance(value, dict):
        ref = value.get("id")
        return None if ref is None else str(ref)
    if value is None:
        return None
    return str(value)


class Store:
    """Thread-safe record storage with NetSuite's derived A/R amounts."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._next_id = _FIRST_ID
        self._records: dict[str, dict[str, Record]] = {t: {} for t in RECORD_TYPES}
        self._by_eid: dict[str, dict[str, str]] = {t: {} for t in RECORD_TYPES}
        self._currencies: dict[str, str] = {}  # ISO code -> internal id
        # doc id -> ids of the payments (refunds) with an apply line on it, so an invoice's
        # amounts don't cost a scan of every payment (O(N^2) over a benchmark's N records)
        self._applied_on: dict[str, dict[str, set[str]]] = {"customerPayment": {}, "customerRefund": {}}

    # ---------------------------------------------------------------- lookups
    def currency_id(self, code: str) -> str:
        code = code.upper()
        with self.lock:
            if code not in self._currencies:
                self._currencies[code] = str(len(self._currencies) + 1)
            return self._currencies[code]

    def currency_code(self, ref: Any) -> str | None:
        """Accepts {"id": "1"}, {"refName": "USD"} or "USD"."""
        if ref is None:
            return None
        if isinstance(ref, dict):
            if ref.get("id") is not None:
                wanted = str(ref["id"])
                for code, cid in self._currencies.items():
                    if cid == wanted:
                        return code
                raise NsError(400, "INVALID_KEY_OR_REF", f"Invalid currency reference key {wanted}.")
            if ref.get("refName"):
                return str(ref["refName"]).upper()
            return None
        return str(ref).upper()

    def resolve(self, rtype: str, ref: str) -> Record:
        """`ref` is an internal id or `eid:<externalId>` [S] (ref §3, eid: works anywhere)."""
        rtype = canonical_type(rtype)
        with self.lock:
            rid = self._by_eid[rtype].get(ref[4:]) if ref.startswith("eid:") else ref
            rec = self._records[rtype].get(rid) if rid is not None else None
        if rec is None:
            # Body as NetSuite sends it for a missing record [S: third-party captures].
            raise NsError(
                404,
                "NONEXISTENT_ID",
                f"The record instance does not exist. Provide a valid record instance ID. ({ref})",
            )
        return rec

    def all(self, rtype: str) -> list[Record]:
        with self.lock:
            return list(self._records[canonical_type(rtype)].values())

    def ids_for_eid(self, rtype: str, eid: str) -> str | None:
        with self.lock:
            return self._by_eid[canonical_type(rtype)].get(eid)

    # ------------------------------------------------------- derived amounts
    def _on(self, rtype: str, doc_id: str) -> Iterator[Record]:
        records = self._records[rtype]
        return iter([records[i] for i in sorted(self._applied_on[rtype].get(doc_id, ()), key=int)])

    def invoice_paid(self, inv_id: str, *, override: Record | None = None) -> Decimal:
        total = ZERO
        for pay in self._on("customerPayment", inv_id):
            if override is not None and pay.id == override.id:
                continue
            total += _applied_to(pay, inv_id)
        if override is not None and override.type == "customerPayment":
            total += _applied_to(override, inv_id)
        return total

    def invoice_amounts(self, inv: Record) -> tuple[Decimal, Decimal, Decimal]:
        total = parse_amount(inv.fields.get("total", 0), "total")
        paid = self.invoice_paid(inv.id)
        return total, paid, total - paid

    def payment_refunded(self, pay_id: str, *, override: Record | None = None) -> Decimal:
        total = ZERO
        for ref in self._on("customerRefund", pay_id):
            if override is not None and ref.id == override.id:
                continue
            total += _applied_to(ref, pay_id)
        if override is not None and override.type == "customerRefund":
            total += _applied_to(override, pay_id)
        return total

    def payment_amounts(self, pay: Record) -> tuple[Decimal, Decimal, Decimal, Decimal]:
        """(payment, applied to invoices, refunded, unapplied)."""
        amount = parse_amount(pay.fields.get("payment", 0), "payment")
        applied = sum((ln.amount or ZERO for ln in pay.apply if ln.apply), ZERO)
        refunded = self.payment_refunded(pay.id)
        return amount, applied, refunded, amount - applied - refunded

    # ------------------------------------------------------------- writes
    def create(self, rtype: str, body: dict[str, Any], *, external_id: str | None = None) -> Record:
        rtype = canonical_type(rtype)
        with self.lock:
            eid = external_id if external_id is not None else body.get("externalId")
            if eid is not None:
                check_external_id(str(eid))
                if str(eid) in self._by_eid[rtype]:
                    # [I] the docs are silent on the code for a duplicate external id on POST.
                    raise NsError(400, "DUP_RCRD", f"A {rtype} record with external ID {eid} already exists.")
            rec = Record(type=rtype, id=str(self._next_id))
            self._apply_body(rec, body, replace=frozenset(), creating=True)
            if eid is not None:
                rec.fields["externalId"] = str(eid)
            self._validate(rec)
            self._next_id += 1
            self._commit(rec)
            return rec

    def update(self, rec: Record, body: dict[str, Any], *, replace: frozenset[str]) -> Record:
        with self.lock:
            current = self._records[rec.type][rec.id]
            cand = copy.deepcopy(current)
            self._apply_body(cand, body, replace=replace, creating=False)
            if current.external_id != cand.external_id and cand.external_id is not None:
                check_external_id(cand.external_id)
                other = self._by_eid[rec.type].get(cand.external_id)
                if other is not None and other != rec.id:
                    raise NsError(400, "DUP_RCRD", f"External ID {cand.external_id} is in use.")
            self._validate(cand)
            cand.modified = _now()
            self._commit(cand, previous=current)
            return cand

    def upsert(self, rtype: str, eid: str, body: dict[str, Any], *, replace: frozenset[str]) -> Record:
        """[S] PUT .../eid:X creates the record or updates it (ref §3, section_156335203191)."""
        rtype = canonical_type(rtype)
        check_external_id(eid)
        with self.lock:
            rid = self._by_eid[rtype].get(eid)
            if rid is None:
                return self.create(rtype, {**body, "externalId": eid}, external_id=eid)
            return self.update(self._records[rtype][rid], {**body, "externalId": eid}, replace=replace)

    def hand_edit(self, rtype: str, rid: str, fields: dict[str, Any]) -> Record:
        """An edit made in the NetSuite UI: no validation, as drift tests need any state."""
        with self.lock:
            rec = self.resolve(rtype, rid)
            for key, value in fields.items():
                if key == "total" or key == "payment":
                    value = parse_amount(value, key)
                if value is None:
                    rec.fields.pop(key, None)
                else:
                    rec.fields[key] = value
            rec.modified = _now()
            self._touch_docs(rec)
            return rec

    def _commit(self, rec: Record, previous: Record | None = None) -> None:
        self._records[rec.type][rec.id] = rec
        index = self._applied_on.get(rec.type)
        if index is not None:
            for ln in previous.apply if previous is not None else ():
                index.get(ln.doc, set()).discard(rec.id)
            for ln in rec.apply:
                index.setdefault(ln.doc, set()).add(rec.id)
        if previous is not None and previous.external_id is not None:
            self._by_eid[rec.type].pop(previous.external_id, None)
        if rec.external_id is not None:
            self._by_eid[rec.type][rec.external_id] = rec.id
        # Applying or unapplying a payment changes the invoice's status and amounts [I].
        self._touch_docs(rec)
        if previous is not None:
            self._touch_docs(previous)

    def _touch_docs(self, rec: Record) -> None:
        target = {"customerPayment": "invoice", "customerRefund": "customerPayment"}.get(rec.type)
        if target is None:
            return
        stamp = _now()
        for ln in rec.apply:
            doc = self._records[target].get(ln.doc)
            if doc is not None:
                doc.modified = stamp

    # ------------------------------------------------------------ body
    def _apply_body(self, rec: Record, body: dict[str, Any], *, replace: frozenset[str], creating: bool) -> None:
        for key, value in body.items():
            if key in (
                "id",
                "links",
                "status",
                "amountPaid",
                "amountRemaining",
                "applied",
                "unapplied",
            ):
                continue  # read-only or derived: NetSuite ignores them on write [I]
            if key == "apply":
                self._merge_apply(rec, value, replace="apply" in replace or creating)
            elif value is None:
                # [S] setting a field to null deletes its value (ref §3, section_1545142173).
                rec.fields.pop(key, None)
            elif key in ("total", "payment"):
                rec.fields[key] = parse_amount(value, key)
            elif key == "currency":
                code = self.currency_code(value)
                if code is not None:
                    rec.fields["currency"] = code
                    self.currency_id(code)
            else:
                rec.fields[key] = value

    def _merge_apply(self, rec: Record, value: Any, *, replace: bool) -> None:
        """[S] Keyed sublists merge on their key; `?replace=apply` drops unmatched lines
        (ref §3, section_1545295601 / section_1545297048)."""
        if rec.type == "invoice":
            raise user_error("The invoice record has no apply sublist.")
        items = value.get("items") if isinstance(value, dict) else value
        if not isinstance(items, list):
            raise NsError(400, "INVALID_CONTENT", 'The apply sublist must be {"items": [...]}.')
        target = "invoice" if rec.type == "customerPayment" else "customerPayment"
        existing = {} if replace else {ln.doc: ln for ln in rec.apply}
        order = [] if replace else [ln.doc for ln in rec.apply]
        for raw in items:
            if not isinstance(raw, dict) or "doc" not in raw:
                raise user_error("Each apply line needs its key field doc.")
            doc = self._doc_id(target, raw["doc"])
            line = existing.get(doc)
            if line is None:
                line = Line(doc=doc, apply=True)
                existing[doc] = line
                order.append(doc)
            for k, v in raw.items():
                if k == "doc":
                    continue
                if k == "apply":
                    line.apply = bool(v)
                elif k == "amount":
                    line.amount = None if v is None else parse_amount(v, "apply.amount")
                elif k not in ("due", "total", "refNum", "type", "links", "line"):
                    line.extra[k] = v
        rec.apply = [existing[d] for d in order]

    def _doc_id(self, target: str, ref: Any) -> str:
        if isinstance(ref, dict) and ref.get("externalId") is not None and ref.get("id") is None:
            rid = self._by_eid[target].get(str(ref["externalId"]))
        else:
            rid = _ref_id(ref)
        if rid is None or rid not in self._records[target]:
            # [I] code seen only in third-party fixtures (ref §3).
            raise NsError(400, "INVALID_KEY_OR_REF", f"Invalid apply reference key {ref!r}.")
        return rid

    # ------------------------------------------------------------ rules
    def _validate(self, cand: Record) -> None:
        if cand.type == "invoice":
            # [I] the total is set directly here; in NetSuite it sums the item lines.
            total = parse_amount(cand.fields.setdefault("total", ZERO), "total")
            paid = self.invoice_paid(cand.id)
            if total < paid:
                raise user_error(f"Invoice {cand.id} total {total} is less than the {paid} paid.")
            return
        if cand.type == "customerPayment":
            self._validate_payment(cand)
        else:
            self._validate_refund(cand)

    def _validate_payment(self, pay: Record) -> None:
        inv_currency: str | None = None
        for ln in pay.apply:
            inv = self._records["invoice"][ln.doc]
            inv_currency = inv_currency or inv.fields.get("currency")
            self._check_same_party(pay, inv)
            if not ln.apply:
                ln.amount = ZERO  # an unticked line pays nothing [I]
                continue
            total = parse_amount(inv.fields.get("total", 0), "total")
            others = self.invoice_paid(inv.id) - _applied_to(
                self._records["customerPayment"].get(pay.id, Record("x", "")), inv.id
            )
            due = total - others
            if ln.amount is None:
                ln.amount = due  # NetSuite fills the amount due when it is left out [I]
            if ln.amount <= ZERO:
                raise user_error(f"The amount applied to invoice {inv.id} must be positive.")
            if ln.amount > due:
                # [I] the refund flow in ref §2 relies on NetSuite refusing an over-application.
                raise user_error(f"You cannot apply {ln.amount} to invoice {inv.id}: only {due} is due.")
        if "currency" not in pay.fields and inv_currency:
            pay.fields["currency"] = inv_currency
        applied = sum((ln.amount or ZERO for ln in pay.apply if ln.apply), ZERO)
        if "payment" not in pay.fields:
            pay.fields["payment"] = applied  # payment defaults to what is applied [I]
        amount = parse_amount(pay.fields["payment"], "payment")
        if amount < ZERO:
            raise user_error("The payment amount cannot be negative.")
        refunded = self.payment_refunded(pay.id)
        if applied + refunded > amount:
            raise user_error(
                f"The total applied ({applied}) and refunded ({refunded}) exceeds the payment amount ({amount})."
            )

    def _validate_refund(self, ref: Record) -> None:
        for ln in ref.apply:
            pay = self._records["customerPayment"][ln.doc]
            self._check_same_party(ref, pay)
            if "currency" not in ref.fields and pay.fields.get("currency"):
                ref.fields["currency"] = pay.fields["currency"]
            if not ln.apply:
                ln.amount = ZERO  # an unticked line pays nothing [I]
                continue
            amount = parse_amount(pay.fields.get("payment", 0), "payment")
            applied = sum((x.amount or ZERO for x in pay.apply if x.apply), ZERO)
            others = self.payment_refunded(pay.id) - _applied_to(
                self._records["customerRefund"].get(ref.id, Record("x", "")), pay.id
            )
            available = amount - applied - others
            if ln.amount is None:
                ln.amount = available
            if ln.amount <= ZERO:
                raise user_error(
                    f"Customer payment {pay.id} has no unapplied amount to refund (available {available})."
                )
            if ln.amount > available:
                # [I] a refund can only pay out the unapplied credit (ref §2, JCurve).
                raise user_error(
                    f"You cannot refund {ln.amount} against customer payment {pay.id}: its "
                    f"unapplied amount is {available}."
                )
        ref.fields["total"] = sum((ln.amount or ZERO for ln in ref.apply if ln.apply), ZERO)

    def _check_same_party(self, rec: Record, doc: Record) -> None:
        mine, theirs = _ref_id(rec.fields.get("customer")), _ref_id(doc.fields.get("customer"))
        if mine is None and theirs is not None:
            rec.fields["customer"] = {"id": theirs}
        elif mine is not None and theirs is not None and mine != theirs:
            raise user_error(f"{doc.type} {doc.id} belongs to customer {theirs}, not {mine}.")
        cur = rec.fields.get("currency")
        if cur is not None and doc.fields.get("currency") not in (None, cur):
            raise user_error(f"Currency {cur} does not match {doc.type} {doc.id} ({doc.fields['currency']}).")


def _applied_to(rec: Record, doc_id: str) -> Decimal:
    return sum((ln.amount or ZERO for ln in rec.apply if ln.apply and ln.doc == doc_id), ZERO)


def check_external_id(eid: str) -> None:
    if not EXTERNAL_ID_RE.match(eid):
        # [S] the allowed characters (ref §3); [I] the error code is not documented.
        raise NsError(
            400,
            "INVALID_EXTERNALID",
            f"Invalid external ID '{eid}': use only letters, digits, underscores and hyphens.",
        )
