"""The transport half of the Stripe fidelity layer: an HTTP front for localstripe.

It runs in a thread of the owning process (stdlib ``ThreadingHTTPServer``) and
forwards every ``/v1/...`` request to the localstripe subprocess with
``requests``. On the way it restores what real Stripe does at the edge and
localstripe does not: API-key checks, Idempotency-Key handling, and it injects
faults for crash tests. The data-model rules live in ``_localstripe_main``.

It also serves ``/_sandbox/...`` so another process can drive the same controls.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import select
import socket
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests

# hold: forward (Stripe commits), then hold the response until released or the client
#   goes away. drop: forward, then close without a response. error_500 / error_429:
#   answer without forwarding. stall: hold *before* forwarding, so Stripe is still
#   "executing" and the request's idempotency key is in flight.
FAULT_ACTIONS = ("hold", "drop", "error_500", "error_429", "stall")
JSON = "application/json"


@dataclass
class Fault:
    method: str
    path: re.Pattern[str]
    action: str
    times: int

    def describe(self) -> dict[str, Any]:
        return {"method": self.method, "path": self.path.pattern, "action": self.action,
                "times": self.times}


class Faults:
    """Faults matched by method + path regex, each used up after ``times`` hits."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._held: set[threading.Event] = set()

    def add(self, method: str = "POST", path: str = r".*", action: str = "error_500",
            times: int = 1) -> None:
        if action not in FAULT_ACTIONS:
            raise ValueError(f"unknown fault action {action!r}; use one of {FAULT_ACTIONS}")
        if times < 1:
            raise ValueError("times must be at least 1")
        with self._lock:
            self._faults.append(Fault(method.upper(), re.compile(path), action, times))

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()
        self.release_held()

    def pending(self) -> list[dict[str, Any]]:
        with self._lock:
            return [f.describe() for f in self._faults]

    def take(self, method: str, path: str) -> str | None:
        with self._lock:
            for fault in self._faults:
                if fault.method in (method, "*") and fault.path.search(path):
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                    return fault.action
        return None

    @property
    def held_count(self) -> int:
        with self._lock:
            return len(self._held)

    def release_held(self) -> int:
        with self._lock:
            held, self._held = list(self._held), set()
        for event in held:
            event.set()
        return len(held)

    def hold(self, client_gone: Callable[[], bool]) -> bool:
        """Block until released (True) or the client disconnects (False)."""
        event = threading.Event()
        with self._lock:
            self._held.add(event)
        try:
            while not event.wait(0.05):
                if client_gone():
                    return False
            return True
        finally:
            with self._lock:
                self._held.discard(event)


@dataclass
class _Entry:
    fingerprint: tuple[str, str, tuple[tuple[str, str], ...]]
    done: threading.Event = field(default_factory=threading.Event)
    status: int = 0
    body: bytes = b""
    request_id: str = ""


class IdempotencyKeys:
    """Stripe's idempotency layer (docs: "Idempotent requests").

    "Stripe's idempotency works by saving the resulting status code and body of the
    first request made for any given idempotency key, regardless of whether it
    succeeds or fails. Subsequent requests with the same key return the same result,
    including 500 errors." "The idempotency layer compares incoming parameters to
    those of the original request and errors if they're not the same." "We save
    results only after the execution of an endpoint begins. If incoming parameters
    fail validation, or the request conflicts with another that was executing
    concurrently, no idempotent result is saved." Keys are scoped per API key here
    (the brief; Stripe scopes them per account and mode). Keys are pruned after 24 h:
    ``expire()`` simulates that.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str], _Entry] = {}

    def begin(self, scope: str, key: str, fingerprint: tuple[str, str, Any]
              ) -> tuple[str, _Entry]:
        with self._lock:
            entry = self._entries.get((scope, key))
            if entry is None:
                entry = _Entry(fingerprint)
                self._entries[(scope, key)] = entry
                return "new", entry
        if not entry.done.is_set():
            return "in_use", entry
        if entry.fingerprint[:2] != fingerprint[:2]:
            return "endpoint_mismatch", entry
        if entry.fingerprint != fingerprint:
            return "mismatch", entry
        return "replay", entry

    def finish(self, scope: str, key: str, entry: _Entry, status: int, body: bytes,
               request_id: str, save: bool) -> None:
        with self._lock:
            if save:
                entry.status, entry.body, entry.request_id = status, body, request_id
            elif self._entries.get((scope, key)) is entry:
                del self._entries[(scope, key)]
        entry.done.set()

    def expire(self) -> None:
        with self._lock:
            self._entries = {k: e for k, e in self._entries.items() if not e.done.is_set()}

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def _error(message: str, type_: str = "invalid_request_error", **extra: Any) -> bytes:
    return json.dumps({"error": {"message": message, "type": type_, **extra}}).encode()


def _mask(key: str) -> str:
    # Stripe: "Invalid API Key provided: sk_live_****...AAAA" (prefix, stars, last 4).
    prefix = key[:8] if key.count("_") >= 2 else ""
    return prefix + "*" * max(len(key) - len(prefix) - 4, 0) + key[-4:]


def _api_key(header: str) -> str | None:
    kind, _, value = header.strip().partition(" ")
    if kind.lower() == "bearer":
        return value.strip() or None
    if kind.lower() == "basic":
        try:
            import base64

            return base64.b64decode(value).decode().split(":", 1)[0] or None
        except ValueError:
            return None
    return None


class FidelityProxy:
    """HTTP front on 127.0.0.1 that forwards to localstripe at ``upstream``."""

    def __init__(self, upstream: str, port: int = 0) -> None:
        self.upstream = upstream.rstrip("/")
        self.faults = Faults()
        self.idempotency = IdempotencyKeys()
        self._local = threading.local()
        proxy = self

        class Handler(_Handler):
            owner = proxy

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                        name="stripe-sandbox-proxy", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.faults.release_held()
        self.server.shutdown()
        self.server.server_close()

    def session(self) -> requests.Session:
        sess: requests.Session | None = getattr(self._local, "session", None)
        if sess is None:
            sess = requests.Session()
            sess.trust_env = False  # never route loopback through a proxy
            self._local.session = sess
        return sess

    # ---- controls, also reachable over /_sandbox/... -------------------------
    def fail_refund(self, refund_id: str, failure_reason: str = "unknown") -> tuple[int, bytes]:
        resp = self.session().post(
            f"{self.upstream}/_config/kollrefund/refunds/{urllib.parse.quote(refund_id)}/fail",
            json={"failure_reason": failure_reason}, timeout=10)
        return resp.status_code, resp.content

    def reset(self) -> None:
        self.faults.clear()
        self.idempotency.clear()
        self.session().delete(f"{self.upstream}/_config/data", timeout=10).raise_for_status()


class _Handler(BaseHTTPRequestHandler):
    owner: FidelityProxy
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go in two writes
    server_version = "kollrefund-stripe-sandbox"

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    # ---- plumbing ----------------------------------------------------------
    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", JSON)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
        except OSError:
            self.close_connection = True

    def _client_gone(self) -> bool:
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            if not readable:
                return False
            return bool(self.connection.recv(1, socket.MSG_PEEK) == b"")
        except OSError:
            return True

    def _drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parsed = urllib.parse.urlsplit(self.path)
        if parsed.path.startswith("/_sandbox"):
            self._control(parsed.path, body)
            return
        self._api(parsed.path, parsed.query, body)

    def _control(self, path: str, body: bytes) -> None:
        owner, method = self.owner, self.command
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            data = dict(urllib.parse.parse_qsl(body.decode()))
        m = re.fullmatch(r"/_sandbox/refunds/([^/]+)/fail", path)
        if path == "/_sandbox/health":
            self._send(200, b'{"ok": true}')
        elif path == "/_sandbox/faults" and method == "POST":
            try:
                owner.faults.add(**{k: data[k] for k in ("method", "path", "action", "times")
                                    if k in data})
            except (ValueError, TypeError, re.error) as e:
                self._send(400, _error(str(e)))
                return
            self._send(200, json.dumps({"faults": owner.faults.pending()}).encode())
        elif path == "/_sandbox/faults" and method == "GET":
            self._send(200, json.dumps({"faults": owner.faults.pending(),
                                        "held": owner.faults.held_count}).encode())
        elif path == "/_sandbox/faults" and method == "DELETE":
            owner.faults.clear()
            self._send(200, b'{"faults": []}')
        elif path == "/_sandbox/release" and method == "POST":
            self._send(200, json.dumps({"released": owner.faults.release_held()}).encode())
        elif path == "/_sandbox/expire-idempotency-keys" and method == "POST":
            owner.idempotency.expire()
            self._send(200, b'{"expired": true}')
        elif m and method == "POST":
            status, out = owner.fail_refund(urllib.parse.unquote(m.group(1)),
                                            str(data.get("failure_reason") or "unknown"))
            self._send(status, out)
        elif path == "/_sandbox/reset" and method == "POST":
            owner.reset()
            self._send(200, b'{"reset": true}')
        else:
            self._send(404, _error(f"Unrecognized sandbox control ({method}: {path})."))

    def _api(self, path: str, query: str, body: bytes) -> None:
        owner, method = self.owner, self.command
        request_id = "req_" + secrets.token_hex(7)
        base_headers = {"Request-Id": request_id}
        # ---- rule 8: keys. Stripe answers 401 for a key it does not know; the sandbox
        # knows test keys only (sk_test_/rk_test_), so a live key is unknown here.
        key = _api_key(self.headers.get("Authorization", ""))
        if key is None:
            self._send(401, _error(
                "You did not provide an API key. You need to provide your API key in the "
                "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer "
                "YOUR_SECRET_KEY')."), base_headers)
            return
        if not re.fullmatch(r"(sk|rk)_test_\w{4,}", key):
            self._send(401, _error(f"Invalid API Key provided: {_mask(key)}"), base_headers)
            return
        upstream_key = "sk_test_" + key[len("rk_test_"):] if key.startswith("rk_") else key

        action = owner.faults.take(method, path)
        if action == "error_500":
            # Errors: "5xx ... an error with Stripe's servers"; type api_error.
            self._send(500, _error("An unknown error occurred", "api_error"), base_headers)
            return
        if action == "error_429":
            # Rate limits: 429 with error code rate_limit; Stripe's error `type` enum has
            # no rate-limit type, so it is invalid_request_error. The docs do not say that
            # Stripe-Should-Retry is sent on a plain rate limit, so it is not.
            self._send(429, _error("Request rate limit exceeded. Learn more about rate "
                                   "limits here https://stripe.com/docs/rate-limits.",
                                   code="rate_limit"), base_headers)
            return

        idem_key = self.headers.get("Idempotency-Key") if method == "POST" else None
        entry = None
        if idem_key:
            params = tuple(sorted(urllib.parse.parse_qsl(body.decode("utf-8", "replace"),
                                                         keep_blank_values=True)))
            state, entry = owner.idempotency.begin(key, idem_key, (method, path, params))
            if state == "in_use":
                # Error codes: idempotency_key_in_use, "The idempotency key provided is
                # currently being used in another request"; HTTP 409 Conflict ("perhaps due
                # to using the same idempotent key"). Wording as Stripe sends it.
                self._send(409, _error(
                    "There is currently another in-progress request using this Idempotent "
                    "Key (that probably means you submitted twice, and the other request is "
                    f"still going through): {idem_key}. Please try again later.",
                    code="idempotency_key_in_use"), base_headers)
                return
            if state in ("mismatch", "endpoint_mismatch"):
                # type idempotency_error: "an Idempotency-Key is re-used on a request that
                # does not match the first request's API endpoint and parameters".
                first = f"{entry.fingerprint[0]} {entry.fingerprint[1]}"
                msg = ("Keys for idempotent requests can only be used with the same "
                       "parameters they were first used with. Try using a key other than "
                       f"'{idem_key}' if you meant to execute a different request."
                       if state == "mismatch" else
                       "Keys for idempotent requests can only be used for the same endpoint "
                       f"they were first used for ('{method} {path}' vs '{first}'). Try using "
                       f"a key other than '{idem_key}' if you meant to execute a different "
                       "request.")
                self._send(400, _error(msg, "idempotency_error"), base_headers)
                return
            if state == "replay":
                self._send(entry.status, entry.body, {
                    **base_headers, "Idempotency-Key": idem_key, "Idempotent-Replayed": "true",
                    "Original-Request": entry.request_id})
                return

        if action == "stall":
            owner.faults.hold(self._client_gone)  # Stripe executes even if the client left
        headers = {"Authorization": f"Bearer {upstream_key}"}
        for name in ("Content-Type", "Stripe-Version"):
            if self.headers.get(name):
                headers[name] = self.headers[name]
        url = owner.upstream + path + (f"?{query}" if query else "")
        try:
            resp = owner.session().request(method, url, data=body or None, headers=headers,
                                           timeout=30)
            status, out = resp.status_code, resp.content
        except requests.RequestException:
            status, out = 500, _error("An unknown error occurred", "api_error")
        if idem_key and entry is not None:
            owner.idempotency.finish(key, idem_key, entry, status, out, request_id,
                                     save=_saved(status, out))
            base_headers["Idempotency-Key"] = idem_key

        if action == "hold" and not owner.faults.hold(self._client_gone):
            self._drop()  # the client went away: its response is lost, Stripe committed
            return
        if action == "drop":
            self._drop()
            return
        self._send(status, out, base_headers)


def _saved(status: int, body: bytes) -> bool:
    """A 400 without an error code, or with a parameter_* code, is a parameter
    validation failure, which Stripe does not save; everything else is saved."""
    if status != 400:
        return True
    try:
        code = json.loads(body).get("error", {}).get("code")
    except (ValueError, AttributeError):
        return True
    return bool(code) and not str(code).startswith("parameter_")
