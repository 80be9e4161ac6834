"""The local NetSuite, over real HTTP on loopback: every documented rule it reproduces."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from requests_oauthlib import OAuth1

from kollrefund.netsuite import OPEN_INVOICES_QUERY, open_invoices_query
from kollrefund.sandbox.netsuite_sandbox import NetSuiteSandbox

REC = "/services/rest/record/v1"
INVALID_LOGIN_BODY = {
    "type": "https://www.w3.org/Protocols/rfc2616/rfc2616-sec10.html#sec10.4.2",
    "title": "Unauthorized",
    "status": 401,
    "o:errorDetails": [
        {
            "detail": "Invalid login attempt. For more details, see the Login Audit Trail in the "
            "NetSuite UI at Setup > Users/Roles > User Management > View Login Audit Trail.",
            "o:errorCode": "INVALID_LOGIN",
        }
    ],
}


@pytest.fixture
def ns() -> Iterator[NetSuiteSandbox]:
    with NetSuiteSandbox("1234567_SB1") as sandbox:
        yield sandbox


def oauth(ns: NetSuiteSandbox, **overrides: Any) -> OAuth1:
    args: dict[str, Any] = {
        "client_key": ns.consumer_key,
        "client_secret": ns.consumer_secret,
        "resource_owner_key": ns.token_id,
        "resource_owner_secret": ns.token_secret,
        "signature_method": "HMAC-SHA256",
        "realm": ns.account_id,
    }
    args.update(overrides)
    return OAuth1(**args)


def call(
    ns: NetSuiteSandbox,
    method: str,
    path: str,
    body: Any = None,
    *,
    auth: Any = None,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> requests.Response:
    return requests.request(
        method,
        ns.url + path,
        json=body,
        params=params,
        auth=auth if auth is not None else oauth(ns),
        headers={"Content-Type": "application/json", **(headers or {})},
        timeout=10,
    )


def error_code(resp: requests.Response) -> str:
    return str(resp.json()["o:errorDetails"][0]["o:errorCode"])


def pay_body(inv: str, amount: Any, **extra: Any) -> dict[str, Any]:
    line = {"doc": {"id": inv}, "apply": True, "amount": amount}
    return {"customer": {"id": "4"}, "apply": {"items": [line]}, **extra}


# ------------------------------------------------------------------ TBA


def test_valid_signature_with_query_params(ns: NetSuiteSandbox) -> None:
    inv = ns.add_invoice(external_id="INV-9", customer_id="4", total=Decimal("120.00"))
    resp = call(ns, "GET", f"{REC}/invoice/{inv}", params={"expandSubResources": "true"})
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "application/vnd.oracle.resource+json; type=singular"
    assert resp.headers["x-netsuite-jobid"]


@pytest.mark.parametrize(
    "overrides",
    [
        {"client_secret": "wrong"},
        {"resource_owner_secret": "wrong"},
        {"client_key": "someone-else"},
        {"realm": "1234567_sb1"},  # realm is case-sensitive
        {"realm": None},
        {"signature_method": "HMAC-SHA1"},  # retired in 2023.1
        {"timestamp": str(int(time.time()) - 3600)},
    ],
    ids=["consumer-secret", "token-secret", "key", "realm-case", "no-realm", "sha1", "stale"],
)
def test_bad_oauth_is_invalid_login(ns: NetSuiteSandbox, overrides: dict[str, Any]) -> None:
    resp = call(ns, "GET", f"{REC}/invoice/1", auth=oauth(ns, **overrides))
    assert resp.status_code == 401
    assert resp.json() == INVALID_LOGIN_BODY


def test_no_authorization_is_invalid_login(ns: NetSuiteSandbox) -> None:
    resp = requests.get(ns.url + f"{REC}/invoice/1", timeout=5)
    assert resp.status_code == 401
    assert error_code(resp) == "INVALID_LOGIN"


def test_query_string_is_signed(ns: NetSuiteSandbox) -> None:
    req = requests.Request("GET", ns.url + f"{REC}/invoice/1?limit=5", auth=oauth(ns)).prepare()
    req.url = ns.url + f"{REC}/invoice/1?limit=6"  # tampered after signing
    with requests.Session() as s:
        assert s.send(req, timeout=5).status_code == 401


def test_json_body_is_not_signed(ns: NetSuiteSandbox) -> None:
    resp = call(ns, "PUT", f"{REC}/invoice/eid:INV-1", {"customer": {"id": "4"}, "total": 10})
    assert resp.status_code == 204


def test_reused_nonce_is_refused(ns: NetSuiteSandbox) -> None:
    fixed = {"nonce": "abc123", "timestamp": str(int(time.time()))}
    assert call(ns, "PUT", f"{REC}/invoice/eid:I1", {"total": 1}, auth=oauth(ns, **fixed)).ok
    again = call(ns, "PUT", f"{REC}/invoice/eid:I1", {"total": 1}, auth=oauth(ns, **fixed))
    assert again.status_code == 401
    assert again.json() == INVALID_LOGIN_BODY


# ------------------------------------------------------------------ M2M


def _keys(kind: str) -> tuple[Any, str]:
    key: Any = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if kind == "PS256"
        else ec.generate_private_key(ec.SECP256R1())
    )
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return key, public.decode()


def _assertion(key: Any, alg: str, token_url: str, **claims: Any) -> str:
    now = int(time.time())
    payload = {
        "iss": "client-1",
        "scope": "rest_webservices",
        "aud": token_url,
        "iat": now,
        "exp": now + 1800,
        **claims,
    }
    headers = {"kid": claims.pop("kid", "cert-1"), "typ": "JWT"}
    payload.pop("kid", None)
    return jwt.encode(payload, key, algorithm=alg, headers=headers)


def _token(ns: NetSuiteSandbox, assertion: str) -> requests.Response:
    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion,
    }
    return requests.post(ns.url + "/services/rest/auth/oauth2/v1/token", data=form, timeout=5)


@pytest.mark.parametrize("alg", ["PS256", "ES256"])
def test_m2m_token_then_bearer(alg: str) -> None:
    key, public = _keys(alg)
    with NetSuiteSandbox(m2m_client_id="client-1", m2m_public_key_pem=public, m2m_certificate_id="cert-1") as ns:
        token_url = ns.url + "/services/rest/auth/oauth2/v1/token"
        resp = _token(ns, _assertion(key, alg, token_url))
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["expires_in"] == 3600 and body["token_type"] == "bearer"
        inv = ns.add_invoice(external_id="INV-9", customer_id="4", total="120.00")
        bearer = {"Authorization": f"Bearer {body['access_token']}"}
        ok = requests.get(ns.url + f"{REC}/invoice/{inv}", headers=bearer, timeout=5)
        assert ok.status_code == 200
        bad = requests.get(ns.url + f"{REC}/invoice/{inv}", headers={"Authorization": "Bearer nope"}, timeout=5)
        assert bad.status_code == 401
        assert 'error="invalid_token"' in bad.headers["WWW-Authenticate"]
        assert bad.headers["WWW-Authenticate"].startswith("Bearer ")

        other_key, _ = _keys(alg)
        refused = [
            _assertion(other_key, alg, token_url),  # signed by a key NetSuite doesn't know
            _assertion(key, alg, token_url, kid="cert-2"),
            _assertion(key, alg, token_url, iss="client-2"),
            _assertion(key, alg, "https://elsewhere/token"),
            _assertion(key, alg, token_url, scope="restlets"),
            _assertion(key, alg, token_url, exp=int(time.time()) + 7200),
            _assertion(key, alg, token_url, exp=int(time.time()) - 10),
        ]
        for assertion in refused:
            r = _token(ns, assertion)
            assert r.status_code in (400, 401), assertion
            assert r.json()["error"]
        wrong_grant = requests.post(token_url, data={"grant_type": "password"}, timeout=5)
        assert wrong_grant.status_code == 400


# ------------------------------------------------------------ records


def test_create_returns_204_and_location(ns: NetSuiteSandbox) -> None:
    resp = call(
        ns,
        "POST",
        f"{REC}/invoice",
        {"externalId": "INV-1", "customer": {"id": "4"}, "currency": {"refName": "USD"}, "total": "99.90"},
    )
    assert resp.status_code == 204
    assert resp.content == b""
    rid = resp.headers["Location"].rsplit("/", 1)[1]
    assert resp.headers["Location"] == f"{ns.url}{REC}/invoice/{rid}"
    got = call(ns, "GET", f"{REC}/invoice/eid:INV-1").json()
    assert got["id"] == rid and got["externalId"] == "INV-1"
    assert got["total"] == 99.9 and got["amountRemaining"] == 99.9 and got["amountPaid"] == 0
    assert got["status"] == {"id": "A", "refName": "Open"}
    assert got["customer"]["id"] == "4" and got["customer"]["refName"]
    assert got["currency"]["refName"] == "USD"
    dup = call(ns, "POST", f"{REC}/invoice", {"externalId": "INV-1", "total": 1})
    assert dup.status_code == 400


def test_upsert_twice_makes_one_record(ns: NetSuiteSandbox) -> None:
    inv = ns.add_invoice(external_id="INV-9", customer_id="4", total="120.00")
    first = call(ns, "PUT", f"{REC}/customerPayment/eid:PAY-1", pay_body(inv, 120, memo="a"))
    second = call(ns, "PUT", f"{REC}/customerPayment/eid:PAY-1", pay_body(inv, 120, memo="b"))
    assert first.status_code == second.status_code == 204
    assert first.headers["Location"] == second.headers["Location"]
    records = ns.records("customerPayment")
    assert len(records) == 1
    assert records[0]["memo"] == "b" and records[0]["externalId"] == "PAY-1"
    assert ns.get("invoice", inv)["amountRemaining"] == 0


def test_external_id_characters(ns: NetSuiteSandbox) -> None:
    assert call(ns, "PUT", f"{REC}/invoice/eid:pi_3Nabc-X", {"total": 1}).status_code == 204
    for bad in ("PAY.1", "PAY%201", "PAY+1"):
        assert call(ns, "PUT", f"{REC}/invoice/eid:{bad}", {"total": 1}).status_code == 400


def test_unknown_record_is_404_with_netsuite_body(ns: NetSuiteSandbox) -> None:
    for ref in ("999", "eid:NOPE"):
        resp = call(ns, "GET", f"{REC}/customerPayment/{ref}")
        assert resp.status_code == 404
        body = resp.json()
        assert body["status"] == 404 and body["title"] and body["type"]
        assert error_code(resp) == "NONEXISTENT_ID"
    assert call(ns, "PATCH", f"{REC}/customerPayment/999", {"memo": "x"}).status_code == 404
    assert call(ns, "PUT", f"{REC}/customerPayment/999", {}).status_code == 405


def test_patch_merges_apply_lines_and_replace_removes(ns: NetSuiteSandbox) -> None:
    a = ns.add_invoice(external_id="INV-A", customer_id="4", total="50.00")
    b = ns.add_invoice(external_id="INV-B", customer_id="4", total="70.00")
    body = {
        "customer": {"id": "4"},
        "payment": 120,
        "apply": {
            "items": [{"doc": {"id": a}, "apply": True, "amount": 50}, {"doc": {"id": b}, "apply": True, "amount": 70}]
        },
    }
    pid = call(ns, "PUT", f"{REC}/customerPayment/eid:PAY-2", body).headers["Location"].rsplit("/", 1)[1]
    merged = call(
        ns,
        "PATCH",
        f"{REC}/customerPayment/{pid}",
        {"memo": "m", "apply": {"items": [{"doc": {"id": a}, "amount": 30}]}},
    )
    assert merged.status_code == 204 and merged.headers["Location"].endswith(f"/{pid}")
    pay = ns.get("customerPayment", pid)
    lines = {i["doc"]["id"]: i for i in pay["apply"]["items"]}
    assert lines[a]["amount"] == 30 and lines[b]["amount"] == 70 and pay["memo"] == "m"
    assert pay["apply"]["totalResults"] == 2 and pay["unapplied"] == 20
    assert ns.get("invoice", a)["amountRemaining"] == 20
    replaced = call(
        ns,
        "PATCH",
        f"{REC}/customerPayment/{pid}",
        {"apply": {"items": [{"doc": {"id": a}, "amount": 50}]}},
        params={"replace": "apply"},
    )
    assert replaced.status_code == 204
    pay = ns.get("customerPayment", pid)
    assert [i["doc"]["id"] for i in pay["apply"]["items"]] == [a]
    assert ns.get("invoice", b)["status"]["refName"] == "Open"
    assert ns.get("invoice", b)["amountRemaining"] == 70
    # null deletes a field
    call(ns, "PATCH", f"{REC}/customerPayment/{pid}", {"memo": None})
    assert "memo" not in ns.get("customerPayment", pid)


def test_full_refund_flow_open_paid_open(ns: NetSuiteSandbox) -> None:
    inv = ns.add_invoice(external_id="INV-9", customer_id="4", total=Decimal("120.00"))
    assert ns.get("invoice", inv)["status"]["refName"] == "Open"
    # 1) the payment applied to the invoice: Paid In Full
    put = call(ns, "PUT", f"{REC}/customerPayment/eid:PAY-1", pay_body(inv, "120.00", payment=120))
    assert put.status_code == 204
    pid = put.headers["Location"].rsplit("/", 1)[1]
    got = ns.get("invoice", inv)
    assert got["status"] == {"id": "B", "refName": "Paid In Full"}
    assert got["amountRemaining"] == 0 and got["amountPaid"] == 120
    # 2) unapply: the invoice is Open with its full amount, the payment stays as credit
    patch = call(
        ns, "PATCH", f"{REC}/customerPayment/{pid}", {"apply": {"items": [{"doc": {"id": inv}, "apply": False}]}}
    )
    assert patch.status_code == 204
    got = ns.get("invoice", inv)
    assert got["status"]["refName"] == "Open" and got["amountRemaining"] == 120
    pay = ns.get("customerPayment", pid)
    assert pay["unapplied"] == 120 and pay["payment"] == 120
    assert len(ns.records("customerPayment")) == 1
    # 3) the refund uses up the credit; more than that is refused
    over = call(
        ns,
        "PUT",
        f"{REC}/customerRefund/eid:RF-1",
        {"customer": {"id": "4"}, "apply": {"items": [{"doc": {"id": pid}, "amount": 120.01}]}},
    )
    assert over.status_code == 400 and error_code(over) == "USER_ERROR"
    ok = call(
        ns,
        "PUT",
        f"{REC}/customerRefund/eid:RF-1",
        {
            "customer": {"id": "4"},
            "account": {"id": "1"},
            "paymentMethod": {"id": "1"},
            "apply": {"items": [{"doc": {"id": pid}, "apply": True, "amount": 120}]},
        },
    )
    assert ok.status_code == 204
    assert ns.get("customerPayment", pid)["unapplied"] == 0
    refund = ns.get("customerRefund", "eid:RF-1")
    assert refund["total"] == 120 and refund["deposit"]["items"] == []
    assert ns.get("invoice", inv)["status"]["refName"] == "Open"
    again = call(
        ns,
        "PUT",
        f"{REC}/customerRefund/eid:RF-2",
        {"customer": {"id": "4"}, "apply": {"items": [{"doc": {"id": pid}, "amount": 1}]}},
    )
    assert again.status_code == 400 and error_code(again) == "USER_ERROR"


def test_partial_refund_flow(ns: NetSuiteSandbox) -> None:
    inv = ns.add_invoice(external_id="INV-9", customer_id="4", total="120.00")
    pid = call(ns, "PUT", f"{REC}/customerPayment/eid:PAY-1", pay_body(inv, 120)).headers["Location"].rsplit("/", 1)[1]
    call(ns, "PATCH", f"{REC}/customerPayment/{pid}", {"apply": {"items": [{"doc": {"id": inv}, "amount": "100.00"}]}})
    got = ns.get("invoice", inv)
    assert got["status"]["refName"] == "Open" and got["amountRemaining"] == 20
    over = call(
        ns, "PUT", f"{REC}/customerRefund/eid:RF-1", {"apply": {"items": [{"doc": {"id": pid}, "amount": "20.01"}]}}
    )
    assert over.status_code == 400 and error_code(over) == "USER_ERROR"
    ok = call(
        ns, "PUT", f"{REC}/customerRefund/eid:RF-1", {"apply": {"items": [{"doc": {"id": pid}, "amount": "20.00"}]}}
    )
    assert ok.status_code == 204
    # re-applying the refunded part to the invoice would overdraw the payment
    back = call(
        ns, "PATCH", f"{REC}/customerPayment/{pid}", {"apply": {"items": [{"doc": {"id": inv}, "amount": 120}]}}
    )
    assert back.status_code == 400 and error_code(back) == "USER_ERROR"


def test_payment_beyond_amount_remaining_is_refused(ns: NetSuiteSandbox) -> None:
    inv = ns.add_invoice(external_id="INV-9", customer_id="4", total="120.00")
    assert call(ns, "PUT", f"{REC}/customerPayment/eid:P1", pay_body(inv, 100)).status_code == 204
    over = call(ns, "PUT", f"{REC}/customerPayment/eid:P2", pay_body(inv, 20.01))
    assert over.status_code == 400 and error_code(over) == "USER_ERROR"
    assert over.json()["o:errorDetails"][0]["detail"]
    assert call(ns, "PUT", f"{REC}/customerPayment/eid:P2", pay_body(inv, 20)).status_code == 204
    assert ns.get("invoice", inv)["status"]["refName"] == "Paid In Full"
    bad_doc = call(ns, "PUT", f"{REC}/customerPayment/eid:P3", pay_body("999", 1))
    assert bad_doc.status_code == 400
    other_customer = call(ns, "PUT", f"{REC}/customerPayment/eid:P4", {**pay_body(inv, 1), "customer": {"id": "5"}})
    assert other_customer.status_code == 400


def test_hand_edit_changes_the_invoice(ns: NetSuiteSandbox) -> None:
    inv = ns.add_invoice(external_id="INV-9", customer_id="4", total="120.00")
    ns.edit_invoice(inv, total=Decimal("90.00"), memo="fixed by hand")
    got = ns.get("invoice", inv)
    assert got["total"] == 90 and got["amountRemaining"] == 90 and got["memo"] == "fixed by hand"


# ----------------------------------------------------------- governance


def test_concurrency_limit_gives_429(ns: NetSuiteSandbox) -> None:
    ns.set_concurrency_limit(2)
    ns.set_latency(300)
    inv = ns.add_invoice(external_id="INV-9", customer_id="4", total="1.00")
    results: list[requests.Response] = []
    lock = threading.Lock()

    def hit() -> None:
        r = call(ns, "GET", f"{REC}/invoice/{inv}")
        with lock:
            results.append(r)

    threads = [threading.Thread(target=hit) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    throttled = [r for r in results if r.status_code == 429]
    assert sum(r.status_code == 200 for r in results) >= 2
    assert throttled
    assert throttled[0].json() == {
        "title": "Bad Request",
        "status": 429,
        "o:errorDetails": [
            {
                "detail": "Concurrent request limit exceeded. Request blocked.",
                "o:errorCode": "CONCURRENCY_LIMIT_EXCEEDED",
            }
        ],
    }
    assert "Retry-After" not in throttled[0].headers
    stats = ns.stats
    assert stats.throttled == len(throttled) and stats.max_in_flight == 2


def test_faults_500_429_and_drop(ns: NetSuiteSandbox) -> None:
    ns.faults.add(method="PUT", path=r"invoice/eid:", action="error_500", times=1)
    ns.faults.add(method="PUT", path=r"invoice/eid:", action="error_429", times=1)
    first = call(ns, "PUT", f"{REC}/invoice/eid:I1", {"total": 1})
    assert first.status_code == 500 and first.json()["status"] == 500
    assert ns.records("invoice") == []  # a 500 fault happens before anything
    assert call(ns, "PUT", f"{REC}/invoice/eid:I1", {"total": 1}).status_code == 429
    assert call(ns, "PUT", f"{REC}/invoice/eid:I1", {"total": 1}).status_code == 204
    ns.faults.add(method="PUT", path=r"invoice/eid:I2", action="drop")
    with pytest.raises(requests.ConnectionError):
        call(ns, "PUT", f"{REC}/invoice/eid:I2", {"total": 2})
    assert ns.get("invoice", "eid:I2")["total"] == 2  # committed before the drop
    assert ns.stats.count("PUT", r"invoice/eid:I1") == 3


# --------------------------------------------------------------- SuiteQL


def test_suiteql_pages_open_invoices(ns: NetSuiteSandbox) -> None:
    ids = [ns.add_invoice(external_id=f"INV-{i}", customer_id="4", total="10.50") for i in range(5)]
    call(ns, "PUT", f"{REC}/customerPayment/eid:P1", pay_body(ids[2], "10.50"))
    path = "/services/rest/query/v1/suiteql"
    transient = {"Prefer": "transient"}
    seen: list[dict[str, Any]] = []
    offset = 0
    while True:
        resp = call(
            ns,
            "POST",
            path,
            {"q": open_invoices_query()},
            headers=transient,
            params={"limit": "2", "offset": str(offset)},
        )
        assert resp.status_code == 200, resp.text
        page = resp.json()
        assert set(page) == {"links", "count", "hasMore", "items", "offset", "totalResults"}
        assert page["totalResults"] == 4 and page["offset"] == offset
        assert page["count"] == len(page["items"])
        rels = {link["rel"] for link in page["links"]}
        assert ("next" in rels) == page["hasMore"]
        seen += page["items"]
        if not page["hasMore"]:
            break
        offset += 2
    assert [row["id"] for row in seen] == [i for i in ids if i != ids[2]]
    row = seen[0]
    assert row["externalid"] == "INV-0" and row["entity"] == "4" and row["currency"] == "USD"
    assert row["foreigntotal"] == 10.5 and row["foreignamountunpaid"] == 10.5
    assert row["status"].endswith("Open") and all(k == k.lower() for k in row)
    # the since clause, and whitespace differences, are understood
    from datetime import date

    future = call(ns, "POST", path, {"q": "  " + open_invoices_query(date(2999, 1, 1))}, headers=transient).json()
    assert future["totalResults"] == 0 and future["hasMore"] is False
    squashed = OPEN_INVOICES_QUERY.format(since="").replace(" ", "\n  ")
    assert call(ns, "POST", path, {"q": squashed}, headers=transient).json()["count"] == 4
    # anything else is a 400 with an error body; the Prefer header is needed
    other = call(ns, "POST", path, {"q": "SELECT * FROM customer"}, headers=transient)
    assert other.status_code == 400 and error_code(other)
    assert call(ns, "POST", path, {"q": open_invoices_query()}).status_code == 400
    assert (
        call(ns, "POST", path, {"q": open_invoices_query()}, headers=transient, params={"limit": "1001"}).status_code
        == 400
    )


# --------------------------------------------------------------- control


def test_control_endpoints_drive_a_sandbox(ns: NetSuiteSandbox) -> None:
    ctl = ns.url + "/_sandbox"
    config = requests.get(f"{ctl}/config", timeout=5).json()
    assert config["KOLLREFUND_NETSUITE__BASE_URL"] == ns.url
    inv = requests.post(
        f"{ctl}/invoices",
        timeout=5,
        json={"external_id": "INV-7", "customer_id": "4", "total": "75.25", "currency": "EUR"},
    ).json()
    assert ns.get("invoice", inv["id"])["currency"]["refName"] == "EUR"
    edited = requests.patch(f"{ctl}/invoices/{inv['id']}", json={"total": "70.00"}, timeout=5)
    assert edited.json()["total"] == 70
    assert requests.get(f"{ctl}/records/invoice", timeout=5).json()[0]["externalId"] == "INV-7"
    requests.post(f"{ctl}/faults", timeout=5, json={"method": "GET", "path": "invoice/", "action": "error_500"})
    assert call(ns, "GET", f"{REC}/invoice/{inv['id']}").status_code == 500
    assert call(ns, "GET", f"{REC}/invoice/{inv['id']}").status_code == 200
    requests.put(f"{ctl}/concurrency", json={"limit": 0}, timeout=5)
    assert call(ns, "GET", f"{REC}/invoice/{inv['id']}").status_code == 429
    requests.put(f"{ctl}/concurrency", json={"limit": 5}, timeout=5)
    requests.put(f"{ctl}/latency", json={"ms": 1}, timeout=5)
    stats = requests.get(f"{ctl}/stats", timeout=5).json()
    assert stats["throttled"] == 1 and stats["by_method"]["GET"] == 3
    assert requests.post(f"{ctl}/faults", json={}, timeout=5).status_code == 400


def test_answers_with_a_body_are_not_held_back_by_nagle(ns: NetSuiteSandbox) -> None:
    """Headers and body written apart used to wait for the client's delayed ACK (~40 ms on
    Linux) on every GET and every error -- a stall NetSuite doesn't have."""
    inv = ns.add_invoice(external_id="INV-1", customer_id="4", total="10.00")
    session = requests.Session()
    times = []
    for _ in range(9):
        start = time.perf_counter()
        resp = session.get(ns.url + f"{REC}/invoice/{inv}", auth=oauth(ns), timeout=10)
        times.append(time.perf_counter() - start)
        assert resp.status_code == 200 and resp.json()["id"] == inv
    assert sorted(times)[4] < 0.03, times


def test_latency_is_the_time_to_answer(ns: NetSuiteSandbox) -> None:
    """set_latency(L): NetSuite answers L ms after the request came in (its own work included)."""
    inv = ns.add_invoice(external_id="INV-1", customer_id="4", total="10.00")
    ns.set_latency(120)
    start = time.perf_counter()
    assert call(ns, "GET", f"{REC}/invoice/{inv}").status_code == 200
    assert 0.12 <= time.perf_counter() - start < 0.2
