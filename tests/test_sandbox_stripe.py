"""The local Stripe (localstripe + fidelity layer), over real HTTP with the stripe SDK."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import stripe

from kollrefund.sandbox.stripe_sandbox import SandboxError, StripeSandbox

PICKLE = Path("/tmp/localstripe.pickle")
_PICKLE_BEFORE = PICKLE.stat().st_mtime_ns if PICKLE.exists() else None


@pytest.fixture(scope="module")
def sandbox() -> Iterator[StripeSandbox]:
    with StripeSandbox() as sb:
        yield sb


@pytest.fixture(autouse=True)
def _clean(request: pytest.FixtureRequest) -> None:
    if "sandbox" in request.fixturenames:
        request.getfixturevalue("sandbox").reset()


def make_client(sb: StripeSandbox, key: str | None = None, retries: int = 0,
                timeout: float = 5) -> stripe.StripeClient:
    return stripe.StripeClient(key or sb.api_key, base_addresses={"api": sb.url},
                               http_client=stripe.RequestsClient(timeout=timeout),
                               max_network_retries=retries)


@pytest.fixture
def client(sandbox: StripeSandbox) -> stripe.StripeClient:
    return make_client(sandbox)


def paid(client: stripe.StripeClient, amount: int = 10000, currency: str = "usd",
         manual: bool = False, **extra: Any) -> stripe.PaymentIntent:
    params: Any = {"amount": amount, "currency": currency,
                              "payment_method": "pm_card_visa", "confirm": True, **extra}
    if manual:
        params["capture_method"] = "manual"
    return client.v1.payment_intents.create(params=params)


def refunds_of(client: stripe.StripeClient, pi: str) -> list[stripe.Refund]:
    return list(client.v1.refunds.list(params={"payment_intent": pi}).auto_paging_iter())


def charge_of(client: stripe.StripeClient, pi: stripe.PaymentIntent) -> stripe.Charge:
    assert isinstance(pi.latest_charge, str)
    return client.v1.charges.retrieve(pi.latest_charge)


# ---- payments and captures ---------------------------------------------------

def test_manual_capture_payment_intent_shape(client: stripe.StripeClient) -> None:
    pi = client.v1.payment_intents.create(params={
        "amount": 5000, "currency": "usd", "payment_method": "pm_card_visa",
        "capture_method": "manual"})
    assert pi.status == "requires_confirmation"
    pi = client.v1.payment_intents.confirm(pi.id)
    assert pi.status == "requires_capture"
    assert isinstance(pi.latest_charge, str) and pi.latest_charge.startswith("ch_")
    assert (pi.amount_capturable, pi.amount_received) == (5000, 0)
    assert "charges" not in pi.to_dict()
    ch = charge_of(client, pi)
    assert (ch.captured, ch.amount_captured, ch.amount_refunded) == (False, 0, 0)
    expanded = client.v1.payment_intents.retrieve(pi.id, params={"expand": ["latest_charge"]})
    assert isinstance(expanded.latest_charge, stripe.Charge)
    assert expanded.latest_charge.id == pi.latest_charge


def test_full_capture(client: stripe.StripeClient) -> None:
    pi = paid(client, 5000, manual=True)
    pi = client.v1.payment_intents.capture(pi.id)
    assert pi.status == "succeeded"
    assert (pi.amount_received, pi.amount_capturable) == (5000, 0)
    ch = charge_of(client, pi)
    assert (ch.captured, ch.amount_captured, ch.amount_refunded) == (True, 5000, 0)


def test_partial_capture_makes_no_refund(client: stripe.StripeClient) -> None:
    # API 2025-03-31.basil: partial capture no longer creates a Refund.
    pi = paid(client, 5000, manual=True)
    pi = client.v1.payment_intents.capture(pi.id, params={"amount_to_capture": 3000})
    assert (pi.status, pi.amount_received) == ("succeeded", 3000)
    ch = charge_of(client, pi)
    assert (ch.amount, ch.amount_captured, ch.amount_refunded, ch.refunded) == (5000, 3000, 0,
                                                                                False)
    assert refunds_of(client, pi.id) == []
    refund = client.v1.refunds.create(params={"payment_intent": pi.id})
    assert refund.amount == 3000  # defaults to what remains refundable
    ch = charge_of(client, pi)
    assert (ch.amount_refunded, ch.refunded) == (3000, True)


def test_automatic_capture_and_jpy(client: stripe.StripeClient) -> None:
    pi = paid(client, 1500, "jpy")
    assert (pi.status, pi.amount_received, pi.currency) == ("succeeded", 1500, "jpy")
    refund = client.v1.refunds.create(params={"payment_intent": pi.id, "amount": 500})
    assert (refund.amount, refund.currency) == (500, "jpy")
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.refunds.create(params={"payment_intent": pi.id, "amount": 1001})
    assert err.value.code == "amount_too_large"
    assert "(¥1,001)" in str(err.value.user_message) and "(¥1,000)" in str(err.value.user_message)


# ---- refunds -----------------------------------------------------------------

def test_full_partial_and_repeated_refunds(client: stripe.StripeClient) -> None:
    pi = paid(client, 10000)
    first = client.v1.refunds.create(params={"payment_intent": pi.id, "amount": 6000})
    assert (first.status, first.payment_intent, first.reason) == ("succeeded", pi.id, None)
    assert charge_of(client, pi).refunded is False
    client.v1.refunds.create(params={"payment_intent": pi.id, "amount": 4000})
    ch = charge_of(client, pi)
    assert (ch.amount_refunded, ch.refunded) == (10000, True)
    full = paid(client, 7500)
    assert client.v1.refunds.create(params={"payment_intent": full.id}).amount == 7500
    # by charge id also works and names the PaymentIntent
    other = paid(client, 2000)
    by_charge = client.v1.refunds.create(params={"charge": str(other.latest_charge)})
    assert (by_charge.amount, by_charge.payment_intent) == (2000, other.id)


def test_over_refund_is_refused_and_nothing_forwarded(client: stripe.StripeClient) -> None:
    pi = paid(client, 10000)
    client.v1.refunds.create(params={"payment_intent": pi.id, "amount": 2500})
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.refunds.create(params={"payment_intent": pi.id, "amount": 8000})
    e = err.value
    assert (e.http_status, e.code, e.param) == (400, "amount_too_large", "amount")
    assert e.error is not None and e.error.type == "invalid_request_error"
    assert e.user_message == ("Refund amount ($80.00) is greater than unrefunded amount on "
                              "charge ($75.00)")
    client.v1.refunds.create(params={"payment_intent": pi.id})
    for params in ({"payment_intent": pi.id}, {"payment_intent": pi.id, "amount": 1},
                   {"charge": str(pi.latest_charge)}):
        with pytest.raises(stripe.InvalidRequestError) as err:
            client.v1.refunds.create(params=params)  # type: ignore[arg-type]
        assert err.value.code == "charge_already_refunded"
        assert err.value.user_message == f"Charge {pi.latest_charge} has already been refunded."
    assert [r.amount for r in refunds_of(client, pi.id)] == [7500, 2500]
    assert charge_of(client, pi).amount_refunded == 10000


def test_refund_of_uncaptured_or_unconfirmed_is_refused(client: stripe.StripeClient) -> None:
    pi = paid(client, 5000, manual=True)
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.refunds.create(params={"payment_intent": pi.id})
    assert (err.value.http_status, err.value.code) == (400, "charge_not_refundable")
    assert refunds_of(client, pi.id) == []
    assert client.v1.payment_intents.capture(pi.id).amount_received == 5000
    fresh = client.v1.payment_intents.create(params={"amount": 900, "currency": "usd"})
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.refunds.create(params={"payment_intent": fresh.id})
    assert err.value.code == "charge_not_refundable"
    assert err.value.user_message == (f"This PaymentIntent ({fresh.id}) does not have a "
                                      "successful charge to refund.")
    assert refunds_of(client, fresh.id) == []


def test_reason_and_metadata_round_trip(client: stripe.StripeClient) -> None:
    pi = paid(client, 3000)
    refund = client.v1.refunds.create(params={
        "payment_intent": pi.id, "amount": 1000, "reason": "requested_by_customer",
        "metadata": {"kollrefund_refund_id": "RF-7"}})
    assert refund.reason == "requested_by_customer"
    assert refund.to_dict()["metadata"] == {"kollrefund_refund_id": "RF-7"}
    got = client.v1.refunds.retrieve(refund.id).to_dict()
    assert (got["reason"], got["metadata"]) == ("requested_by_customer",
                                                {"kollrefund_refund_id": "RF-7"})
    assert [r.reason for r in refunds_of(client, pi.id)] == ["requested_by_customer"]
    client.v1.refunds.update(refund.id, params={"metadata": {"note": "x"}})
    assert client.v1.refunds.retrieve(refund.id).to_dict()["metadata"] == {
        "kollrefund_refund_id": "RF-7", "note": "x"}
    for reason in ("duplicate", "fraudulent"):
        assert client.v1.refunds.create(params={
            "payment_intent": pi.id, "amount": 100, "reason": reason}).reason == reason
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.refunds.create(params={"payment_intent": pi.id, "reason": "changed_mind"})
    assert (err.value.http_status, err.value.param) == (400, "reason")
    assert len(refunds_of(client, pi.id)) == 3


def test_not_found_errors(client: stripe.StripeClient) -> None:
    cases: list[tuple[Any, str, str]] = [
        (lambda: client.v1.payment_intents.retrieve("pi_x"), "payment_intent", "pi_x"),
             (lambda: client.v1.charges.retrieve("ch_x"), "charge", "ch_x"),
             (lambda: client.v1.refunds.retrieve("re_x"), "refund", "re_x")]
    for call, name, oid in cases:
        with pytest.raises(stripe.InvalidRequestError) as err:
            call()
        e = err.value
        assert (e.http_status, e.code, e.param) == (404, "resource_missing", "id")
        assert e.error is not None and e.error.type == "invalid_request_error"
        assert e.user_message == f"No such {name}: '{oid}'"
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.refunds.create(params={"payment_intent": "pi_missing"})
    assert (err.value.http_status, err.value.param) == (404, "payment_intent")


def test_refund_list_created_filters_and_paging(client: stripe.StripeClient) -> None:
    pi = paid(client, 10000)
    made = [client.v1.refunds.create(params={"payment_intent": pi.id, "amount": 100})
            for _ in range(5)]
    created = made[0].created
    listed = list(client.v1.refunds.list(params={"created": {"gte": created}, "limit": 2})
                  .auto_paging_iter())
    assert [r.id for r in listed] == [r.id for r in reversed(made)]  # newest first, all
    page = client.v1.refunds.list(params={"created": {"gte": created}, "limit": 2})
    assert page.has_more is True and len(page.data) == 2
    assert client.v1.refunds.list(params={"created": {"gt": created + 3600}}).data == []
    assert client.v1.refunds.list(params={"created": {"lt": created}}).data == []
    assert len(client.v1.refunds.list(params={"created": {"gte": created,
                                                          "lte": created + 60}}).data) == 5
    other = paid(client, 500)
    client.v1.refunds.create(params={"payment_intent": other.id})
    assert [r.payment_intent for r in refunds_of(client, other.id)] == [other.id]
    unpaid = client.v1.payment_intents.create(params={"amount": 900, "currency": "usd"})
    assert refunds_of(client, unpaid.id) == []


def test_failed_refund(sandbox: StripeSandbox, client: stripe.StripeClient) -> None:
    pi = paid(client, 10000)
    refund = client.v1.refunds.create(params={"payment_intent": pi.id, "amount": 4000})
    out = sandbox.fail_refund(refund.id, failure_reason="expired_or_canceled_card")
    assert out["status"] == "failed"
    got = client.v1.refunds.retrieve(refund.id)
    assert (got.status, got.failure_reason) == ("failed", "expired_or_canceled_card")
    assert str(got.failure_balance_transaction).startswith("txn_")
    ch = charge_of(client, pi)
    assert (ch.amount_refunded, ch.refunded) == (0, False)
    assert refunds_of(client, pi.id)[0].status == "failed"
    # the money is refundable again
    assert client.v1.refunds.create(params={"payment_intent": pi.id}).amount == 10000
    with pytest.raises(SandboxError):
        sandbox.fail_refund("re_missing")
    with pytest.raises(SandboxError):
        sandbox.fail_refund(refund.id)  # already failed


# ---- keys and declines ---------------------------------------------------------

def test_keys(sandbox: StripeSandbox) -> None:
    restricted = make_client(sandbox, "rk_test_kollrefund_restricted")
    assert paid(restricted, 700).status == "succeeded"
    for key in ("sk_live_abcdefghijklmnop1234", "rk_live_abcdefghijklmnop1234", "not_a_key"):
        with pytest.raises(stripe.AuthenticationError) as err:
            make_client(sandbox, key).v1.payment_intents.list()
        assert err.value.http_status == 401
        assert "abcdefghijkl" not in str(err.value.user_message)
    assert str(err.value.user_message).startswith("Invalid API Key provided: ")
    resp = requests.get(sandbox.url + "/v1/payment_intents", timeout=5)
    assert resp.status_code == 401
    assert "did not provide an API key" in resp.json()["error"]["message"]


@pytest.mark.parametrize(("pm", "decline_code", "message"), [
    ("pm_card_chargeDeclined", "generic_decline", "Your card was declined."),
    ("pm_card_chargeDeclinedInsufficientFunds", "insufficient_funds",
     "Your card has insufficient funds."),
])
def test_declines(client: stripe.StripeClient, pm: str, decline_code: str,
                  message: str) -> None:
    with pytest.raises(stripe.CardError) as err:
        client.v1.payment_intents.create(params={
            "amount": 2000, "currency": "usd", "payment_method": pm, "confirm": True})
    e = err.value
    assert (e.http_status, e.code, e.user_message) == (402, "card_declined", message)
    assert e.error is not None
    assert (e.error.type, e.error.decline_code) == ("card_error", decline_code)
    pi = e.error.payment_intent
    assert pi is not None and pi.status == "requires_payment_method"
    again = stripe.PaymentIntent.construct_from(pi.to_dict(), "k")
    assert again.last_payment_error is not None
    assert again.last_payment_error.decline_code == decline_code


# ---- idempotency -----------------------------------------------------------------

def test_idempotency_replay_mismatch_scope_and_expiry(sandbox: StripeSandbox,
                                                      client: stripe.StripeClient) -> None:
    pi = paid(client, 10000)
    params: Any = {"payment_intent": pi.id, "amount": 1000}
    first = client.v1.refunds.create(params=params, options={"idempotency_key": "k1"})
    again = client.v1.refunds.create(params=params, options={"idempotency_key": "k1"})
    assert again.id == first.id and again.to_dict() == first.to_dict()
    assert again.last_response is not None and first.last_response is not None
    assert again.last_response.headers.get("Idempotent-Replayed") == "true"
    assert first.last_response.headers.get("Idempotent-Replayed") is None
    with pytest.raises(stripe.IdempotencyError) as err:
        client.v1.refunds.create(params={**params, "amount": 999},  # type: ignore[arg-type]
                                 options={"idempotency_key": "k1"})
    assert err.value.http_status == 400
    assert "same parameters" in str(err.value.user_message)
    with pytest.raises(stripe.IdempotencyError):
        client.v1.payment_intents.create(params={"amount": 1, "currency": "usd"},
                                         options={"idempotency_key": "k1"})
    # keys are scoped per API key
    other = make_client(sandbox, "rk_test_someone_else").v1.refunds.create(
        params=params, options={"idempotency_key": "k1"})
    assert other.id != first.id
    sandbox.expire_idempotency_keys()
    after = client.v1.refunds.create(params=params, options={"idempotency_key": "k1"})
    assert after.id not in (first.id, other.id)
    assert len(refunds_of(client, pi.id)) == 3


def test_idempotency_errors_replay_but_validation_is_not_saved(
        client: stripe.StripeClient) -> None:
    pi = paid(client, 1000)
    params: Any = {"payment_intent": pi.id, "amount": 5000}
    for _ in range(2):
        with pytest.raises(stripe.InvalidRequestError) as err:
            client.v1.refunds.create(params=params, options={"idempotency_key": "over"})
        assert err.value.code == "amount_too_large"
    assert err.value.headers is not None
    assert err.value.headers.get("Idempotent-Replayed") == "true"
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.refunds.create(params={"payment_intent": pi.id, "reason": "bogus"},
                                 options={"idempotency_key": "val"})
    ok = client.v1.refunds.create(params={"payment_intent": pi.id},
                                  options={"idempotency_key": "val"})
    assert ok.amount == 1000


def test_idempotency_key_in_flight_gets_409(sandbox: StripeSandbox,
                                            client: stripe.StripeClient) -> None:
    pi = paid(client, 1000)
    sandbox.faults.add(method="POST", path=r"^/v1/refunds$", action="stall")
    done: list[Any] = []
    worker = threading.Thread(target=lambda: done.append(client.v1.refunds.create(
        params={"payment_intent": pi.id}, options={"idempotency_key": "busy"})))
    try:
        worker.start()
        _wait(lambda: sandbox.faults.held_count == 1)
        with pytest.raises(stripe.APIError) as err:
            client.v1.refunds.create(params={"payment_intent": pi.id},
                                     options={"idempotency_key": "busy"})
        assert err.value.http_status == 409 and err.value.error is not None
        assert err.value.error.code == "idempotency_key_in_use"
        assert refunds_of(client, pi.id) == []  # the stalled request has not run yet
    finally:
        sandbox.faults.release_held()
        worker.join(5)
    assert done and done[0].amount == 1000
    assert len(refunds_of(client, pi.id)) == 1


def _wait(cond: Any, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.01)


# ---- faults ------------------------------------------------------------------------

def test_error_500_is_not_forwarded_and_sdk_retry_recovers(sandbox: StripeSandbox,
                                                           client: stripe.StripeClient) -> None:
    pi = paid(client, 1000)
    sandbox.faults.add(method="POST", path=r"^/v1/refunds$", action="error_500")
    with pytest.raises(stripe.APIError) as err:
        client.v1.refunds.create(params={"payment_intent": pi.id})
    assert err.value.http_status == 500
    assert err.value.error is not None and err.value.error.type == "api_error"
    assert refunds_of(client, pi.id) == []
    sandbox.faults.add(method="POST", path=r"^/v1/refunds$", action="error_500", times=2)
    retrying = make_client(sandbox, retries=2)
    refund = retrying.v1.refunds.create(params={"payment_intent": pi.id})
    assert [r.id for r in refunds_of(client, pi.id)] == [refund.id]
    assert sandbox.faults.pending() == []


def test_error_429_is_not_forwarded(sandbox: StripeSandbox,
                                    client: stripe.StripeClient) -> None:
    pi = paid(client, 1000)
    sandbox.faults.add(method="POST", path=r"^/v1/refunds$", action="error_429")
    with pytest.raises(stripe.RateLimitError) as err:
        make_client(sandbox, retries=2).v1.refunds.create(params={"payment_intent": pi.id})
    assert err.value.http_status == 429 and err.value.error is not None
    assert err.value.error.code == "rate_limit"
    assert err.value.headers is not None and "Stripe-Should-Retry" not in err.value.headers
    assert refunds_of(client, pi.id) == []
    # GETs are matched by method too: a POST fault leaves them alone
    assert client.v1.payment_intents.retrieve(pi.id).id == pi.id


def test_drop_commits_then_retry_replays(sandbox: StripeSandbox,
                                         client: stripe.StripeClient) -> None:
    pi = paid(client, 1000)
    sandbox.faults.add(method="POST", path=r"^/v1/refunds$", action="drop")
    with pytest.raises(stripe.APIConnectionError):
        client.v1.refunds.create(params={"payment_intent": pi.id},
                                 options={"idempotency_key": "drop-1"})
    [committed] = refunds_of(client, pi.id)
    retry = client.v1.refunds.create(params={"payment_intent": pi.id},
                                     options={"idempotency_key": "drop-1"})
    assert retry.id == committed.id
    assert retry.last_response is not None
    assert retry.last_response.headers.get("Idempotent-Replayed") == "true"
    # the SDK's own retry (same auto-generated key) also ends with one refund
    other = paid(client, 1000)
    sandbox.faults.add(method="POST", path=r"^/v1/refunds$", action="drop")
    make_client(sandbox, retries=2).v1.refunds.create(params={"payment_intent": other.id})
    assert len(refunds_of(client, other.id)) == 1


def test_hold_then_release(sandbox: StripeSandbox, client: stripe.StripeClient) -> None:
    pi = paid(client, 1000)
    sandbox.faults.add(method="POST", path=r"^/v1/refunds$", action="hold")
    got: list[stripe.Refund] = []
    worker = threading.Thread(target=lambda: got.append(
        client.v1.refunds.create(params={"payment_intent": pi.id})))
    worker.start()
    try:
        _wait(lambda: sandbox.faults.held_count == 1)
        [committed] = refunds_of(client, pi.id)  # Stripe committed before the hold
        assert not got
        assert sandbox.faults.release_held() == 1
        worker.join(5)
        assert got and got[0].id == committed.id
    finally:
        sandbox.faults.release_held()


def test_hold_until_client_is_killed(sandbox: StripeSandbox,
                                     client: stripe.StripeClient) -> None:
    pi = paid(client, 1000)
    sandbox.faults.add(method="POST", path=r"^/v1/refunds$", action="hold")
    code = (
        "import stripe,sys\n"
        "c=stripe.StripeClient(sys.argv[1],base_addresses={'api':sys.argv[2]},"
        "http_client=stripe.RequestsClient(timeout=30))\n"
        "c.v1.refunds.create(params={'payment_intent':sys.argv[3]},"
        "options={'idempotency_key':'crash-1'})\n")
    proc = subprocess.Popen([sys.executable, "-c", code, sandbox.api_key, sandbox.url, pi.id])
    try:
        _wait(lambda: sandbox.faults.held_count == 1, timeout=10)
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
        _wait(lambda: sandbox.faults.held_count == 0)  # dropped when the client went away
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    [committed] = refunds_of(client, pi.id)
    resumed = client.v1.refunds.create(params={"payment_intent": pi.id},
                                       options={"idempotency_key": "crash-1"})
    assert resumed.id == committed.id


def test_fault_times_and_clear(sandbox: StripeSandbox, client: stripe.StripeClient) -> None:
    sandbox.faults.add(method="GET", path=r"^/v1/payment_intents", action="error_500", times=2)
    for _ in range(2):
        with pytest.raises(stripe.APIError):
            client.v1.payment_intents.list()
    client.v1.payment_intents.list()
    sandbox.faults.add(method="GET", path=r".*", action="error_500", times=5)
    sandbox.faults.clear()
    client.v1.payment_intents.list()
    with pytest.raises(ValueError):
        sandbox.faults.add(action="explode")


def test_http_controls(sandbox: StripeSandbox, client: stripe.StripeClient) -> None:
    base = sandbox.url + "/_sandbox"
    pi = paid(client, 1000)
    r = requests.post(base + "/faults", json={"method": "POST", "path": "^/v1/refunds$",
                                              "action": "error_429", "times": 1}, timeout=5)
    assert r.status_code == 200 and r.json()["faults"][0]["action"] == "error_429"
    assert requests.get(base + "/faults", timeout=5).json()["faults"]
    assert requests.post(base + "/faults", json={"action": "nope"}, timeout=5).status_code == 400
    assert requests.delete(base + "/faults", timeout=5).json() == {"faults": []}
    refund = client.v1.refunds.create(params={"payment_intent": pi.id, "amount": 400},
                                      options={"idempotency_key": "ctl"})
    assert requests.post(base + "/expire-idempotency-keys", timeout=5).status_code == 200
    again = client.v1.refunds.create(params={"payment_intent": pi.id, "amount": 400},
                                     options={"idempotency_key": "ctl"})
    assert again.id != refund.id
    r = requests.post(f"{base}/refunds/{refund.id}/fail",
                      json={"failure_reason": "lost_or_stolen_card"}, timeout=5)
    assert r.status_code == 200 and r.json()["failure_reason"] == "lost_or_stolen_card"
    assert requests.post(f"{base}/refunds/re_nope/fail", timeout=5).status_code == 404
    assert requests.post(base + "/release", timeout=5).json() == {"released": 0}
    assert requests.post(base + "/reset", timeout=5).status_code == 200
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.payment_intents.retrieve(pi.id)


# ---- lifecycle -----------------------------------------------------------------------

def test_isolation_start_time_and_stop(sandbox: StripeSandbox,
                                       client: stripe.StripeClient) -> None:
    pi = paid(client, 1000)
    started = time.monotonic()
    with StripeSandbox() as other:
        assert time.monotonic() - started < 1.5
        assert other.url != sandbox.url and other.url.startswith("http://127.0.0.1:")
        assert other.upstream_url.startswith("http://127.0.0.1:")
        with pytest.raises(stripe.InvalidRequestError):
            make_client(other).v1.payment_intents.retrieve(pi.id)
        mine = paid(make_client(other), 2000)
        with pytest.raises(stripe.InvalidRequestError):
            client.v1.payment_intents.retrieve(mine.id)
        pid = other.pid
        assert pid is not None
        upstream_port = int(other.upstream_url.rsplit(":", 1)[1])
    assert other.pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", upstream_port), timeout=1).close()
    assert client.v1.payment_intents.retrieve(pi.id).id == pi.id


def test_localstripe_binds_loopback_only(sandbox: StripeSandbox) -> None:
    port = int(sandbox.upstream_url.rsplit(":", 1)[1])
    with open("/proc/net/tcp6") as f6:
        assert f":{port:04X} " not in f6.read()
    with open("/proc/net/tcp") as f4:
        listening = [line.split()[1] for line in f4 if line.split()[3] == "0A"]
    assert f"0100007F:{port:04X}" in listening


def test_subprocess_dies_with_its_parent(tmp_path: Path) -> None:
    code = ("from kollrefund.sandbox.stripe_sandbox import StripeSandbox\n"
            "import sys,time\nsb=StripeSandbox().start()\n"
            "print(sb.pid,flush=True)\ntime.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        child = int(proc.stdout.readline())
        os.kill(child, 0)
    finally:
        proc.kill()
        proc.wait()

    def gone() -> bool:  # exited (a zombie waiting for init to reap it counts)
        try:
            with open(f"/proc/{child}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] == "Z"
        except FileNotFoundError:
            return True

    _wait(gone)


def test_main_prints_url_and_stops_on_ctrl_c() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "kollrefund.sandbox.stripe_sandbox"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "Stripe sandbox at http://127.0.0.1:" in line
        url = line.split(" at ", 1)[1].split(" ", 1)[0]
        assert requests.get(url + "/_sandbox/health", timeout=5).json() == {"ok": True}
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_no_pickle_written() -> None:
    now = PICKLE.stat().st_mtime_ns if PICKLE.exists() else None
    assert now == _PICKLE_BEFORE


def test_reset_wipes_data(sandbox: StripeSandbox, client: stripe.StripeClient) -> None:
    pi = paid(client, 1000)
    sandbox.faults.add(action="error_500", times=3)
    sandbox.reset()
    assert sandbox.faults.pending() == []
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.payment_intents.retrieve(pi.id)
    assert json.loads(requests.get(sandbox.url + "/_sandbox/health", timeout=5).text)["ok"]
