"""kollrefund.netsuite against the local NetSuite over real HTTP: no mocks."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from kollrefund.errors import ConfigError, ProviderRejected, ProviderUnavailable, UsageError
from kollrefund.netsuite import (
    AdaptiveLimiter,
    NetSuiteClient,
    NetSuiteConfig,
    amount,
    check_external_id,
    open_invoices_query,
    origin_for,
    status_name,
)
from kollrefund.sandbox.netsuite_sandbox import NetSuiteSandbox


@pytest.fixture
def ns() -> Iterator[NetSuiteSandbox]:
    with NetSuiteSandbox("1234567_SB1") as sandbox:
        yield sandbox


def tba(ns: NetSuiteSandbox, **overrides: Any) -> NetSuiteConfig:
    args: dict[str, Any] = {
        "account_id": ns.account_id,
        "base_url": ns.url,
        "auth": "tba",
        "consumer_key": ns.consumer_key,
        "consumer_secret": ns.consumer_secret,
        "token_id": ns.token_id,
        "token_secret": ns.token_secret,
        "timeout_seconds": 5,
    }
    args.update(overrides)
    return NetSuiteConfig(**args)


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def client(ns: NetSuiteSandbox, sleeps: Sleeps) -> Iterator[NetSuiteClient]:
    with NetSuiteClient(tba(ns), sleep=sleeps, no_backoff=True) as c:
        yield c


def payment(inv: str, amt: Any) -> dict[str, Any]:
    return {
        "customer": {"id": "4"},
        "payment": amt,
        "apply": {"items": [{"doc": {"id": inv}, "apply": True, "amount": amt}]},
    }


# ---------------------------------------------------------------- config


def test_origin_and_config_checks() -> None:
    assert origin_for("1234567_SB1") == "https://1234567-sb1.suitetalk.api.netsuite.com"
    assert NetSuiteConfig(account_id="1234567_SB1").origin == origin_for("1234567_SB1")
    assert NetSuiteConfig(account_id="1", base_url="http://127.0.0.1:9/").origin == ("http://127.0.0.1:9")
    with pytest.raises(ConfigError):
        NetSuiteClient(NetSuiteConfig(account_id="", consumer_key="k"))
    with pytest.raises(ConfigError, match="token_secret"):
        NetSuiteClient(NetSuiteConfig(account_id="1", consumer_key="k", consumer_secret="s", token_id="t"))
    with pytest.raises(ConfigError, match="origin"):
        NetSuiteClient(
            NetSuiteConfig(
                account_id="1",
                base_url="http://h/services/rest",
                consumer_key="k",
                consumer_secret="s",
                token_id="t",
                token_secret="x",
            )
        )
    cfg = NetSuiteConfig(
        account_id="1",
        consumer_key="KEY-S3CRET",
        consumer_secret="S3CRET",
        token_id="TOK-S3CRET",
        token_secret="S3CRET2",
        private_key_pem="PEM-S3CRET",
        client_id="CID-S3CRET",
    )
    assert "S3CRET" not in repr(cfg)


def test_helpers() -> None:
    assert status_name({"id": "B", "refName": "Paid In Full"}) == "Paid In Full"
    assert status_name("Invoice : Open") == "Open" and status_name("Open") == "Open"
    assert amount(120.1) == Decimal("120.1") and amount("0.30") == Decimal("0.30")
    check_external_id("pi_3NabcDEF-1")
    with pytest.raises(UsageError):
        check_external_id("PAY 1")


# ------------------------------------------------------------- happy path


def test_upsert_patch_get_refund_flow(ns: NetSuiteSandbox, client: NetSuiteClient) -> None:
    inv = ns.add_invoice(external_id="INV-9", customer_id="4", total=Decimal("120.00"))
    pid = client.upsert("customerPayment", "PAY-1", payment(inv, Decimal("120.00")))
    assert pid == client.upsert("customerPayment", "PAY-1", payment(inv, Decimal("120.00")))
    assert len(ns.records("customerPayment")) == 1
    got = client.get("invoice", inv)
    assert status_name(got["status"]) == "Paid In Full" and amount(got["amountRemaining"]) == 0
    assert client.get("customerPayment", "eid:PAY-1")["id"] == pid
    client.patch("customerPayment", pid, {"apply": {"items": [{"doc": {"id": inv}, "apply": False}]}})
    got = client.get("invoice", "eid:INV-9")
    assert status_name(got["status"]) == "Open"
    assert amount(got["amountRemaining"]) == Decimal("120.00")
    rid = client.upsert(
        "customerRefund",
        "RF-1",
        {"customer": {"id": "4"}, "apply": {"items": [{"doc": {"id": pid}, "apply": True, "amount": "120.00"}]}},
    )
    assert client.get("customerRefund", rid)["externalId"] == "RF-1"
    with pytest.raises(ProviderRejected) as over:
        client.upsert("customerRefund", "RF-2", {"apply": {"items": [{"doc": {"id": pid}, "amount": "0.01"}]}})
    assert over.value.code == "USER_ERROR" and over.value.http_status == 400
    assert "0.01" in over.value.message


def test_patch_replace(ns: NetSuiteSandbox, client: NetSuiteClient) -> None:
    a = ns.add_invoice(external_id="A", customer_id="4", total="10")
    b = ns.add_invoice(external_id="B", customer_id="4", total="20")
    pid = client.upsert(
        "customerPayment",
        "PAY-2",
        {
            "customer": {"id": "4"},
            "apply": {"items": [{"doc": {"id": a}, "amount": 10}, {"doc": {"id": b}, "amount": 20}]},
        },
    )
    client.patch("customerPayment", pid, {"apply": {"items": [{"doc": {"id": a}}]}}, replace="apply")
    assert [i["doc"]["id"] for i in client.get("customerPayment", pid)["apply"]["items"]] == [a]


def test_suiteql_pages(ns: NetSuiteSandbox, client: NetSuiteClient) -> None:
    ids = [ns.add_invoice(external_id=f"INV-{i}", customer_id="4", total="12.34") for i in range(5)]
    rows = list(client.suiteql(open_invoices_query(), page_size=2))
    assert [r["id"] for r in rows] == ids
    assert all("links" not in r for r in rows)
    assert amount(rows[0]["foreignamountunpaid"]) == Decimal("12.34")
    assert ns.stats.count("POST", "suiteql") == 3
    with pytest.raises(ProviderRejected):
        list(client.suiteql("SELECT 1 FROM dual"))


# --------------------------------------------------------------- failures


def test_retries_500_and_429_then_succeeds(ns: NetSuiteSandbox, sleeps: Sleeps) -> None:
    inv = ns.add_invoice(external_id="INV-9", customer_id="4", total="120.00")
    ns.faults.add(method="PUT", path="customerPayment/eid:", action="error_500", times=2)
    ns.faults.add(method="GET", path="invoice/", action="error_429", times=2)
    delays: list[float] = []
    with NetSuiteClient(tba(ns), sleep=delays.append, rng=lambda: 1.0, no_backoff=False) as c:
        c.upsert("customerPayment", "PAY-1", payment(inv, 120))
        assert status_name(c.get("invoice", inv)["status"]) == "Paid In Full"
    assert ns.stats.count("PUT", "customerPayment") == 3
    assert ns.stats.count("GET", "invoice") == 3
    assert delays == [0.25, 0.5, 0.25, 0.5]  # exponential; jitter pinned to its maximum
    assert len(ns.records("customerPayment")) == 1


def test_backoff_is_capped_and_can_be_switched_off(ns: NetSuiteSandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    ns.faults.add(method="GET", path="invoice/", action="error_500", times=99)
    delays: list[float] = []
    cfg = tba(ns, max_retries=6, backoff_base=1.0, backoff_cap=4.0)
    client = NetSuiteClient(cfg, sleep=delays.append, rng=lambda: 1.0, no_backoff=False)
    with client as c, pytest.raises(ProviderUnavailable) as err:
        c.get("invoice", "1")
    assert delays == [1.0, 2.0, 4.0, 4.0, 4.0, 4.0]
    assert err.value.http_status == 500 and "7 attempts" in err.value.message
    monkeypatch.setenv("KOLLREFUND_NO_BACKOFF", "1")
    delays.clear()
    with NetSuiteClient(cfg, sleep=delays.append, rng=lambda: 1.0) as c, pytest.raises(ProviderUnavailable):
        c.get("invoice", "1")
    assert delays == [0.0] * 6


def test_exhausted_retries_are_unavailable(ns: NetSuiteSandbox, sleeps: Sleeps) -> None:
    ns.faults.add(method="PUT", path="invoice/eid:", action="error_429", times=99)
    client = NetSuiteClient(tba(ns, max_retries=2), sleep=sleeps, no_backoff=True)
    with client as c, pytest.raises(ProviderUnavailable) as err:
        c.upsert("invoice", "INV-1", {"total": 1})
    assert err.value.http_status == 429 and err.value.exit_code == 6
    assert "CONCURRENCY_LIMIT_EXCEEDED" in err.value.message
    assert ns.stats.count("PUT") == 3


def test_connection_refused_is_unavailable(sleeps: Sleeps) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = NetSuiteConfig(
        account_id="1",
        base_url=f"http://127.0.0.1:{port}",
        consumer_key="k",
        consumer_secret="SECRET-XYZ",
        token_id="t",
        token_secret="TOKEN-SECRET-XYZ",
        max_retries=1,
        timeout_seconds=2,
    )
    with NetSuiteClient(cfg, sleep=sleeps, no_backoff=True) as c:
        with pytest.raises(ProviderUnavailable) as err:
            c.get("invoice", "1")
        assert "ConnectionError" in err.value.message
        # nothing was sent, so even a plain POST may be tried again
        with pytest.raises(ProviderUnavailable, match="2 attempts"):
            c.create("invoice", {"total": 1})
    assert "SECRET" not in str(err.value)


def test_post_is_never_retried_blindly(ns: NetSuiteSandbox, client: NetSuiteClient) -> None:
    ns.faults.add(method="POST", path="invoice$", action="error_500")
    with pytest.raises(ProviderUnavailable, match="unknown"):
        client.create("invoice", {"total": 1})
    ns.faults.add(method="POST", path="invoice$", action="drop")
    with pytest.raises(ProviderUnavailable, match="unknown"):
        client.create("invoice", {"externalId": "I-2", "total": 2})
    assert ns.stats.count("POST", "invoice") == 2
    assert [r["externalId"] for r in ns.records("invoice")] == ["I-2"]  # committed once
    ns.faults.add(method="POST", path="invoice$", action="error_429")  # blocked: safe
    assert client.create("invoice", {"total": 3})


def test_drop_after_commit_then_retry_makes_one_record(ns: NetSuiteSandbox, client: NetSuiteClient) -> None:
    inv = ns.add_invoice(external_id="INV-9", customer_id="4", total="120.00")
    ns.faults.add(method="PUT", path="customerPayment/eid:PAY-1", action="drop")
    pid = client.upsert("customerPayment", "PAY-1", payment(inv, 120))
    assert ns.stats.count("PUT", "customerPayment") == 2
    records = ns.records("customerPayment")
    assert len(records) == 1 and records[0]["id"] == pid
    assert ns.get("invoice", inv)["amountRemaining"] == 0


def test_4xx_is_rejected_with_code(ns: NetSuiteSandbox, client: NetSuiteClient) -> None:
    with pytest.raises(ProviderRejected) as err:
        client.get("invoice", "999")
    assert err.value.code == "NONEXISTENT_ID" and err.value.http_status == 404
    assert err.value.exit_code == 5
    inv = ns.add_invoice(external_id="INV-9", customer_id="4", total="1.00")
    with pytest.raises(ProviderRejected) as over:
        client.upsert("customerPayment", "PAY-1", payment(inv, "1.01"))
    assert over.value.code == "USER_ERROR"
    assert len(over.value.message) < 500
    assert ns.stats.count("PUT") == 1  # a 4xx is not retried


@pytest.mark.parametrize(
    "override",
    [
        {"consumer_secret": "WRONG-CONSUMER-SECRET"},
        {"token_secret": "WRONG-TOKEN-SECRET"},
        {"account_id": "1234567_sb1"},
    ],
)
def test_wrong_credentials(ns: NetSuiteSandbox, override: dict[str, str]) -> None:
    cfg = tba(ns, **override)
    with NetSuiteClient(cfg, no_backoff=True) as c, pytest.raises(ProviderRejected) as err:
        c.get("invoice", "1")
    assert err.value.code == "INVALID_LOGIN" and err.value.http_status == 401
    text = f"{err.value} {err.value.args!r} {err.value.hint}"
    for secret in (cfg.consumer_secret, cfg.token_secret, cfg.consumer_key, cfg.token_id):
        assert secret and secret not in text
    assert "credentials" in err.value.message
    assert ns.stats.count("GET") == 1


# ------------------------------------------------------------ concurrency


def test_run_all_adapts_to_the_concurrency_limit(ns: NetSuiteSandbox) -> None:
    ns.set_concurrency_limit(5)
    ns.set_latency(15)
    invoices = [ns.add_invoice(external_id=f"INV-{i}", customer_id="4", total="10.00") for i in range(60)]
    cfg = tba(ns, concurrency=20, max_retries=12, backoff_base=0.002, backoff_cap=0.02)
    done: list[int] = []
    with NetSuiteClient(cfg) as c:
        jobs = [
            (lambda i=i, inv=inv: c.upsert("customerPayment", f"PAY-{i}", payment(inv, 10)))
            for i, inv in enumerate(invoices)
        ]
        results = c.run_all(jobs, on_done=lambda i, _r: done.append(i))
        assert c.limiter.lowest < 20 and c.limiter.cuts >= 1
    assert all(isinstance(r, str) for r in results), [r for r in results if not isinstance(r, str)]
    assert sorted(done) == list(range(60))
    records = ns.records("customerPayment")
    assert len(records) == 60 and len({r["externalId"] for r in records}) == 60
    assert len(set(results)) == 60
    stats = ns.stats
    assert stats.throttled > 0 and stats.max_in_flight <= 5
    assert all(amount(ns.get("invoice", i)["amountRemaining"]) == 0 for i in invoices)


def test_run_all_returns_errors_in_order(ns: NetSuiteSandbox, client: NetSuiteClient) -> None:
    def boom() -> str:
        return client.get("invoice", "999")["id"]  # type: ignore[no-any-return]

    inv = ns.add_invoice(external_id="INV-1", customer_id="4", total="1")
    results = client.run_all([lambda: client.get("invoice", inv)["id"], boom])
    assert results[0] == inv and isinstance(results[1], ProviderRejected)


def test_adaptive_limiter_cuts_once_per_wave_and_grows_back() -> None:
    lim = AdaptiveLimiter(8)
    tickets = [lim.acquire() for _ in range(8)]
    for t in tickets[:4]:
        lim.release(t, "throttled")
    assert lim.limit == 4 and lim.cuts == 1  # one wave, one cut
    for t in tickets[4:]:
        lim.release(t, "ok")
    lim.release(lim.acquire(), "throttled")
    assert lim.limit == 2
    for _ in range(200):
        lim.release(lim.acquire(), "ok")
    assert lim.limit == 8 and lim.lowest == 2


# ------------------------------------------------------------------- M2M


def _key_pair(alg: str) -> tuple[str, str]:
    key: Any = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if alg == "PS256"
        else ec.generate_private_key(ec.SECP256R1())
    )
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


@pytest.mark.parametrize("alg", ["PS256", "ES256"])
def test_m2m_end_to_end(alg: str) -> None:
    private, public = _key_pair(alg)
    with NetSuiteSandbox(m2m_client_id="cid", m2m_public_key_pem=public, m2m_certificate_id="cert") as ns:
        cfg = NetSuiteConfig(
            account_id=ns.account_id,
            base_url=ns.url,
            auth="m2m",
            client_id="cid",
            certificate_id="cert",
            private_key_pem=private,
        )
        inv = ns.add_invoice(external_id="INV-1", customer_id="4", total="5")
        with NetSuiteClient(cfg, no_backoff=True) as c:
            assert c.get("invoice", inv)["id"] == inv
            assert c.upsert("customerPayment", "PAY-1", payment(inv, 5))
            assert ns.stats.count("POST", "oauth2") == 1  # the token is cached
            ns.expire_tokens()
            assert c.get("invoice", inv)["id"] == inv  # one 401, a new token, success
            assert ns.stats.count("POST", "oauth2") == 2
        other_private, _ = _key_pair(alg)
        bad = NetSuiteConfig(
            account_id=ns.account_id,
            base_url=ns.url,
            auth="m2m",
            client_id="cid",
            certificate_id="cert",
            private_key_pem=other_private,
        )
        with NetSuiteClient(bad, no_backoff=True) as c, pytest.raises(ProviderRejected) as err:
            c.get("invoice", inv)
        assert err.value.code == "invalid_grant"
        assert "PRIVATE KEY" not in str(err.value)


def test_m2m_bad_key_is_config_error() -> None:
    with pytest.raises(ConfigError) as err:
        NetSuiteClient(
            NetSuiteConfig(
                account_id="1", auth="m2m", client_id="c", certificate_id="k", private_key_pem="NOT-A-KEY-SECRET"
            )
        )
    assert "NOT-A-KEY" not in str(err.value)


def test_import_is_light() -> None:
    code = (
        "import sys, kollrefund.netsuite; "
        "bad = [m for m in ('jwt', 'cryptography') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_limiter_falls_back_to_the_clean_limit_when_a_probe_fails() -> None:
    """Configured above NetSuite's limit, it settles there: a failed probe one above the
    limit that ran clean goes back to it, not to half of it (bench_sync, at 4x the limit)."""
    lim = AdaptiveLimiter(20)
    lim.release(lim.acquire(), "throttled")
    lim.release(lim.acquire(), "throttled")
    lim.release(lim.acquire(), "throttled")
    assert lim.limit == 2  # 20 -> 10 -> 5 -> 2: nothing known to be clean yet
    for _ in range(4):
        lim.release(lim.acquire(), "ok")
    assert lim.limit == 3 and lim.good == 2
    for _ in range(6):
        lim.release(lim.acquire(), "ok")
    assert lim.limit == 4 and lim.good == 3
    lim.release(lim.acquire(), "throttled")  # the probe at 4 fails
    assert lim.limit == 3  # back to the clean 3, not 4 // 2
    lim.release(lim.acquire(), "throttled")  # and at the clean limit itself: capacity shrank
    assert lim.limit == 1 and lim.good == 0


def test_proxy_settings_from_the_environment_still_apply(ns: NetSuiteSandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    """The client resolves HTTP(S)_PROXY / NO_PROXY once instead of per request: same effect."""
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    inv = ns.add_invoice(external_id="INV-1", customer_id="4", total="1")
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{dead}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with NetSuiteClient(tba(ns, max_retries=0), no_backoff=True) as c, pytest.raises(ProviderUnavailable):
        c.get("invoice", inv)
    assert ns.stats.total == 0  # it went to the proxy
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with NetSuiteClient(tba(ns, max_retries=0), no_backoff=True) as c:
        assert c.get("invoice", inv)["id"] == inv
