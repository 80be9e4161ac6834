"""`/_sandbox/...`: drive a running sandbox from another process (not part of NetSuite).

GET    /_sandbox/config                     url, account id, credentials (made up)
POST   /_sandbox/invoices                   {"external_id","customer_id","total","currency",
                                             "customer_name"?} -> {"id"}
PATCH  /_sandbox/invoices/<id>              hand edit, e.g. {"total": "90.00"}
GET    /_sandbox/records/<type>[/<ref>]     stored records in NetSuite's GET shape
POST   /_sandbox/faults                     {"method","path","action","times"}
DELETE /_sandbox/faults
PUT    /_sandbox/latency                    {"ms": 50}
PUT    /_sandbox/concurrency                {"limit": 5}
GET    /_sandbox/stats    DELETE /_sandbox/stats
POST   /_sandbox/expire_tokens              every M2M access token stops working
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from kollrefund import exact_json
from kollrefund.sandbox.netsuite_store import NsError

if TYPE_CHECKING:
    from kollrefund.sandbox.netsuite_sandbox import NetSuiteSandbox

Response = tuple[int, dict[str, str], bytes]


def _ok(body: Any, status: int = 200) -> Response:
    return status, {"Content-Type": "application/json"}, exact_json.dumps(body).encode()


def control(sb: NetSuiteSandbox, method: str, path: str, raw: bytes) -> Response:
    try:
        body: Any = json.loads(raw or b"{}", parse_float=Decimal)
    except ValueError:
        raise NsError(400, "INVALID_CONTENT", "The body is not JSON.") from None
    parts = path.strip("/").split("/")[1:]
    route = (method, parts[0] if parts else "")
    if route == ("GET", "config"):
        return _ok({"url": sb.url, **sb.env()})
    if route == ("POST", "invoices") and len(parts) == 1:
        rid = sb.add_invoice(
            external_id=str(body["external_id"]),
            customer_id=str(body["customer_id"]),
            total=str(body["total"]),
            currency=str(body.get("currency", "USD")),
            customer_name=body.get("customer_name"),
        )
        return _ok({"id": rid}, 201)
    if route == ("PATCH", "invoices") and len(parts) == 2:
        sb.edit_invoice(parts[1], **body)
        return _ok(sb.get("invoice", parts[1]))
    if route == ("GET", "records") and len(parts) == 2:
        return _ok(sb.records(parts[1]))
    if route == ("GET", "records") and len(parts) == 3:
        return _ok(sb.get(parts[1], parts[2]))
    if route == ("POST", "faults"):
        sb.faults.add(
            method=str(body["method"]),
            path=str(body["path"]),
            action=body["action"],
            times=int(body.get("times", 1)),
        )
        return _ok({"ok": True}, 201)
    if route == ("DELETE", "faults"):
        sb.faults.clear()
        return _ok({"ok": True})
    if route == ("PUT", "latency"):
        sb.set_latency(int(body["ms"]))
        return _ok({"ok": True})
    if route == ("PUT", "concurrency"):
        sb.set_concurrency_limit(int(body["limit"]))
        return _ok({"ok": True})
    if route == ("GET", "stats"):
        return _ok(sb.stats.as_dict())
    if route == ("DELETE", "stats"):
        sb.reset_stats()
        return _ok({"ok": True})
    if route == ("POST", "expire_tokens"):
        sb.expire_tokens()
        return _ok({"ok": True})
    raise NsError(404, "NONEXISTENT_ID", f"No sandbox control endpoint {method} {path}.")
