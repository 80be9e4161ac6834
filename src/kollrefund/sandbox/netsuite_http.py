"""Responses of the local NetSuite: JSON bodies and NetSuite's error bodies."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from kollrefund import exact_json
from kollrefund.sandbox.netsuite_store import NsError

# [S] type URIs of NetSuite's error bodies follow RFC 2616 sections (ref §1, §3).
_TYPE_URI = {
    400: "https://www.w3.org/Protocols/rfc2616/rfc2616-sec10.html#sec10.4.1",
    401: "https://www.w3.org/Protocols/rfc2616/rfc2616-sec10.html#sec10.4.2",
    404: "https://www.w3.org/Protocols/rfc2616/rfc2616-sec10.html#sec10.4.5",
    405: "https://www.w3.org/Protocols/rfc2616/rfc2616-sec10.html#sec10.4.6",
    500: "https://www.w3.org/Protocols/rfc2616/rfc2616-sec10.html#sec10.5.1",
}
_TITLE = {
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    500: "Internal Server Error",
}


Response = tuple[int, dict[str, str], bytes]


def json_response(status: int, body: Any, kind: str = "singular", headers: dict[str, str] | None = None) -> Response:
    data = exact_json.dumps(body).encode()
    h = {"Content-Type": f"application/vnd.oracle.resource+json; type={kind}"}
    return status, {**h, **(headers or {})}, data


def error_response(err: NsError) -> Response:
    headers = dict(err.headers)
    if headers.pop("X-OAuth-Error", None):
        # The token endpoint answers in RFC 6749's shape, not NetSuite's record errors [I].
        data = json.dumps({"error": err.code, "error_description": err.detail}).encode()
        return err.status, {"Content-Type": "application/json", **headers}, data
    body: dict[str, Any] = {
        "type": _TYPE_URI.get(err.status, _TYPE_URI[400]),
        "title": _TITLE.get(err.status, "Bad Request"),
        "status": err.status,
        "o:errorDetails": [{"detail": err.detail, "o:errorCode": err.code}],
    }
    if err.status == 429:
        # [S] the body seen for the concurrency limit: title "Bad Request", no type, and
        # no Retry-After header (ref §4, third-party captures).
        body = {"title": "Bad Request", "status": 429, "o:errorDetails": body["o:errorDetails"]}
    return json_response(err.status, body, "error", headers)


def throttled() -> NsError:
    return NsError(429, "CONCURRENCY_LIMIT_EXCEEDED", "Concurrent request limit exceeded. Request blocked.")


def parse_body(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw or b"{}", parse_float=Decimal)
    except ValueError:
        raise NsError(400, "INVALID_CONTENT", "The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise NsError(400, "INVALID_CONTENT", "The request body must be a JSON object.")
    return body
