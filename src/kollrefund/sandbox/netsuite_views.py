"""How the local NetSuite shows its records: REST GET shapes and the SuiteQL answer.

[S] GET shape from a real capture (ref §3, NangoHQ netsuite-tba mocks): references are
`{id, refName, links}`, sublists `{links, items, totalResults}` (items only with
`expandSubResources=true`; here they are always expanded, which the brief allows).
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from kollrefund.netsuite import OPEN_INVOICES_QUERY, OPEN_INVOICES_SINCE
from kollrefund.sandbox.netsuite_store import (
    INVOICE_OPEN,
    INVOICE_PAID,
    ZERO,
    NsError,
    Record,
    Store,
)

RECORD_PATH = "/services/rest/record/v1"


def num(value: Decimal) -> Decimal:
    """Amounts go out as JSON numbers, as NetSuite sends them (ref §5 [I]: both forms seen);
    the sandbox writes them with ``exact_json``, so never through a float."""
    return value


def ref(rid: str, name: str, href: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"links": [{"rel": "self", "href": href}] if href else [], "id": rid}
    out["refName"] = name
    return out


def _doc_name(rec: Record) -> str:
    label = {"invoice": "Invoice", "customerPayment": "Payment", "customerRefund": "Refund"}
    return f"{label[rec.type]} #{rec.fields.get('tranId') or rec.external_id or rec.id}"


def record_json(store: Store, rec: Record, origin: str) -> dict[str, Any]:
    with store.lock:  # derived amounts read other records that writers may be changing
        return _record_json(store, rec, origin)


def _record_json(store: Store, rec: Record, origin: str) -> dict[str, Any]:
    self_href = f"{origin}{RECORD_PATH}/{rec.type}/{rec.id}"
    out: dict[str, Any] = {"links": [{"rel": "self", "href": self_href}], "id": rec.id}
    for key, value in rec.fields.items():
        if key == "customer":
            cid = str(value.get("id") if isinstance(value, dict) else value)
            name = value.get("refName") if isinstance(value, dict) else None
            out["customer"] = ref(cid, str(name or f"Customer {cid}"), f"{origin}{RECORD_PATH}/customer/{cid}")
        elif key == "currency":
            out["currency"] = ref(
                store.currency_id(str(value)),
                str(value),
                f"{origin}{RECORD_PATH}/currency/{store.currency_id(str(value))}",
            )
        elif isinstance(value, Decimal):
            out[key] = num(value)
        else:
            out[key] = value
    out["createdDate"] = rec.created
    out["lastModifiedDate"] = rec.modified
    if rec.type == "invoice":
        total, paid, remaining = store.invoice_amounts(rec)
        out["total"] = num(total)
        out["amountPaid"] = num(paid)
        out["amountRemaining"] = num(remaining)
        sid, sname = INVOICE_PAID if remaining <= ZERO else INVOICE_OPEN
        out["status"] = {"id": sid, "refName": sname}
    elif rec.type == "customerPayment":
        amount, applied, _refunded, unapplied = store.payment_amounts(rec)
        out["payment"] = num(amount)
        out["total"] = num(amount)
        out["applied"] = num(applied)
        out["unapplied"] = num(unapplied)
        # [S] payment statuses B Not Deposited / C Deposited (ref §2, prolecto).
        deposited = rec.fields.get("undepFunds") is False
        out["status"] = {"id": "C", "refName": "Deposited"} if deposited else {"id": "B", "refName": "Not Deposited"}
        out["apply"] = _sublist(store, rec, "invoice", self_href)
    else:
        out["total"] = num(sum((ln.amount or ZERO for ln in rec.apply if ln.apply), ZERO))
        out["apply"] = _sublist(store, rec, "customerPayment", self_href)
        # [S] the deposit sublist is always empty on GET (ref §2, article_0830082954).
        out["deposit"] = {
            "links": [{"rel": "self", "href": f"{self_href}/deposit"}],
            "items": [],
            "totalResults": 0,
        }
    return out


def _sublist(store: Store, rec: Record, target: str, self_href: str) -> dict[str, Any]:
    items = []
    for i, ln in enumerate(rec.apply):
        doc = store.resolve(target, ln.doc)
        if target == "invoice":
            total, _paid, due = store.invoice_amounts(doc)
        else:
            total, _applied, _refunded, due = store.payment_amounts(doc)
        item: dict[str, Any] = {
            "links": [],
            "apply": ln.apply,
            "amount": num(ln.amount or ZERO),
            "doc": ref(doc.id, _doc_name(doc)),
            "due": num(due),
            "line": i,
            "refNum": str(doc.fields.get("tranId") or doc.external_id or doc.id),
            "total": num(total),
            "type": "Invoice" if target == "invoice" else "Payment",
        }
        if doc.fields.get("currency"):
            item["currency"] = str(doc.fields["currency"])
        item.update(ln.extra)
        items.append(item)
    return {
        "links": [{"rel": "self", "href": f"{self_href}/apply"}],
        "items": items,
        "totalResults": len(items),
    }


# ------------------------------------------------------------------ SuiteQL


def _query_pattern() -> re.Pattern[str]:
    """The one query the product sends, with an optional `since` clause.

    There is no SQL engine here: anything else is refused with a 400, which keeps the
    product honest about the single query shape both sides share (kollrefund.netsuite).
    """
    head, tail = (_flexible(p) for p in OPEN_INVOICES_QUERY.split("{since}"))
    since = _flexible(OPEN_INVOICES_SINCE).replace(re.escape("{date}"), r"(?P<since>\d{4}-\d{2}-\d{2})")
    return re.compile(f"^{head}(?:{since})?{tail}$", re.IGNORECASE)


def _flexible(text: str) -> str:
    """A regex for `text` where any run of whitespace matches any other."""
    return r"\s+".join(re.escape(word) for word in re.split(r"\s+", text))


_PATTERN = _query_pattern()


def suiteql(store: Store, query: str, *, limit: int, offset: int, origin: str) -> dict[str, Any]:
    match = _PATTERN.match(query.strip())
    if match is None:
        raise NsError(
            400,
            "INVALID_PARAMETER",
            "Invalid search query. The local NetSuite understands only the open-invoices query "
            "in kollrefund.netsuite.OPEN_INVOICES_QUERY.",
        )
    since = match.group("since")
    rows: list[dict[str, Any]] = []
    with store.lock:
        invoices = sorted(store.all("invoice"), key=lambda r: int(r.id))
        for inv in invoices:
            total, _paid, remaining = store.invoice_amounts(inv)
            if remaining <= ZERO:
                continue
            if since and inv.modified[:10] < since:
                continue
            rows.append(_invoice_row(inv, total, remaining))
    page = rows[offset : offset + limit]
    base = f"{origin}/services/rest/query/v1/suiteql"
    links = [
        {"rel": "self", "href": f"{base}?limit={limit}&offset={offset}"},
        {"rel": "first", "href": f"{base}?limit={limit}&offset=0"},
    ]
    has_more = offset + len(page) < len(rows)
    if has_more:
        links.append({"rel": "next", "href": f"{base}?limit={limit}&offset={offset + limit}"})
    if rows:
        last = ((len(rows) - 1) // limit) * limit
        links.append({"rel": "last", "href": f"{base}?limit={limit}&offset={last}"})
    # [S] the paged collection shape (ref §5, kinuski-dev notes; timdietrich.me).
    return {
        "links": links,
        "count": len(page),
        "hasMore": has_more,
        "items": page,
        "offset": offset,
        "totalResults": len(rows),
    }


def _invoice_row(inv: Record, total: Decimal, remaining: Decimal) -> dict[str, Any]:
    customer = inv.fields.get("customer")
    cid = str(customer.get("id") if isinstance(customer, dict) else customer)
    cname = customer.get("refName") if isinstance(customer, dict) else None
    row: dict[str, Any] = {
        "links": [],
        # [S] column names come back lowercase (ref §5).
        "id": inv.id,
        "tranid": str(inv.fields.get("tranId") or inv.id),
        "entity": cid,
        "customername": str(cname or f"Customer {cid}"),
        # [I] BUILTIN.DF(status) on a transaction reads "<Type> : <Status>"; the docs
        # consulted do not say. Compare with kollrefund.netsuite.status_name().
        "status": f"Invoice : {INVOICE_OPEN[1]}",
        "currency": str(inv.fields.get("currency") or ""),
        "foreigntotal": num(total),
        "foreignamountunpaid": num(remaining),
        "lastmodified": inv.modified.replace("T", " ").rstrip("Z"),
    }
    if inv.external_id is not None:
        # [I] SuiteQL leaves out columns that are NULL, so externalid may be missing.
        row["externalid"] = inv.external_id
    return row
