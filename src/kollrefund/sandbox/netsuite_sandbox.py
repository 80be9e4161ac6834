"""A local NetSuite REST server on loopback, for tests, `kollrefund demo` and `sandbox`.

It reproduces the documented behaviour kollrefund depends on (auth, upsert by external id,
sublist merge, A/R amounts, errors, concurrency governance, SuiteQL paging) and lets a
test break it on purpose (faults, latency, a lower concurrency limit). Each rule cites
/work/shared/reference/netsuite-rest.md ("ref §n") or says that the docs are silent.

    python -m kollrefund.sandbox.netsuite_sandbox [--port 8089]

runs one until Ctrl-C and prints its URL and (made-up) credentials.
"""

from __future__ import annotations

import argparse
import json
import secrets
import threading
import time
import uuid
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from kollrefund.sandbox.netsuite_auth import (
    TOKEN_PATH,
    M2MIssuer,
    M2MSettings,
    TbaVerifier,
    invalid_login,
)
from kollrefund.sandbox.netsuite_faults import FaultAction, Faults, SandboxStats
from kollrefund.sandbox.netsuite_http import (
    Response,
    error_response,
    json_response,
    parse_body,
    throttled,
)
from kollrefund.sandbox.netsuite_store import NsError, Store, canonical_type, parse_amount
from kollrefund.sandbox.netsuite_views import RECORD_PATH, record_json, suiteql

__all__ = ["FaultAction", "Faults", "NetSuiteSandbox", "SandboxStats", "main"]

SUITEQL_PATH = "/services/rest/query/v1/suiteql"


class NetSuiteSandbox:
    def __init__(
        self,
        account_id: str = "1234567_SB1",
        consumer_key: str | None = None,
        consumer_secret: str | None = None,
        token_id: str | None = None,
        token_secret: str | None = None,
        *,
        concurrency_limit: int = 5,
        latency_ms: int = 0,
        m2m_client_id: str | None = None,
        m2m_public_key_pem: str | None = None,
        m2m_certificate_id: str | None = None,
        port: int = 0,
    ) -> None:
        self.account_id = account_id
        self.consumer_key = consumer_key or secrets.token_hex(32)
        self.consumer_secret = consumer_secret or secrets.token_hex(32)
        self.token_id = token_id or secrets.token_hex(32)
        self.token_secret = token_secret or secrets.token_hex(32)
        self.tba = TbaVerifier(
            account_id=account_id,
            consumer_key=self.consumer_key,
            consumer_secret=self.consumer_secret,
            token_id=self.token_id,
            token_secret=self.token_secret,
        )
        m2m = None
        if m2m_client_id and m2m_public_key_pem and m2m_certificate_id:
            m2m = M2MSettings(m2m_client_id, m2m_public_key_pem, m2m_certificate_id)
        self.m2m = M2MIssuer(m2m, account_id)
        self.store = Store()
        self.faults = Faults()
        self.concurrency_limit = concurrency_limit
        self.latency_ms = latency_ms
        self._port = port
        self._stats = SandboxStats()
        self._in_flight = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ lifecycle
    def start(self) -> NetSuiteSandbox:
        handler = type("Handler", (_Handler,), {"sandbox": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", self._port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True, name="netsuite-sandbox"
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> NetSuiteSandbox:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "start the sandbox first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def env(self) -> dict[str, str]:
        """The KOLLREFUND_NETSUITE__* variables that point kollrefund at this sandbox."""
        return {
            "KOLLREFUND_NETSUITE__ACCOUNT_ID": self.account_id,
            "KOLLREFUND_NETSUITE__BASE_URL": self.url,
            "KOLLREFUND_NETSUITE__CONSUMER_KEY": self.consumer_key,
            "KOLLREFUND_NETSUITE__CONSUMER_SECRET": self.consumer_secret,
            "KOLLREFUND_NETSUITE__TOKEN_ID": self.token_id,
            "KOLLREFUND_NETSUITE__TOKEN_SECRET": self.token_secret,
        }

    # ---------------------------------------------------------- test API
    def add_invoice(
        self,
        *,
        external_id: str,
        customer_id: str,
        total: Decimal | str,
        currency: str = "USD",
        customer_name: str | None = None,
    ) -> str:
        customer: dict[str, Any] = {"id": str(customer_id)}
        if customer_name:
            customer["refName"] = customer_name
        body = {
            "externalId": external_id,
            "tranId": external_id,
            "customer": customer,
            "currency": currency,
            "total": parse_amount(total, "total"),
        }
        return self.store.create("invoice", body).id

    def edit_invoice(self, internal_id: str, **fields: Any) -> None:
        """A hand edit in the NetSuite UI (for drift tests): no rule is checked."""
        self.store.hand_edit("invoice", internal_id, fields)

    def records(self, record_type: str) -> list[dict[str, Any]]:
        return [record_json(self.store, r, self.url) for r in self.store.all(record_type)]

    def get(self, record_type: str, ref: str) -> dict[str, Any]:
        return record_json(self.store, self.store.resolve(record_type, ref), self.url)

    def set_latency(self, ms: int) -> None:
        self.latency_ms = ms

    def set_concurrency_limit(self, n: int) -> None:
        self.concurrency_limit = n

    def expire_tokens(self) -> None:
        self.m2m.expire_all()

    @property
    def stats(self) -> SandboxStats:
        with self._lock:
            s = self._stats
            return SandboxStats(dict(s.requests), dict(s.by_method), s.throttled, s.max_in_flight, s.total,
                                s.first_at, s.last_at)

    def reset_stats(self) -> None:
        with self._lock:
            self._stats = SandboxStats()

    # -------------------------------------------------------- governance
    def _enter(self, method: str, path: str) -> bool:
        with self._lock:
            s = self._stats
            key = f"{method} {path}"
            s.requests[key] = s.requests.get(key, 0) + 1
            s.by_method[method] = s.by_method.get(method, 0) + 1
            s.total += 1
            now = time.monotonic()
            s.first_at = now if s.first_at is None else s.first_at
            s.last_at = now
            # [S] concurrency is per account; the request over the limit is rejected at
            # once (ref §4, Oracle section_1525253248: "the 16th concurrent request").
            if self._in_flight >= self.concurrency_limit:
                s.throttled += 1
                return False
            self._in_flight += 1
            s.max_in_flight = max(s.max_in_flight, self._in_flight)
            return True

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1
            self._stats.last_at = time.monotonic()


class _Handler(BaseHTTPRequestHandler):
    sandbox: NetSuiteSandbox
    _arrived: float = 0.0
    protocol_version = "HTTP/1.1"  # keep-alive, as NetSuite's front end does
    # Headers and body go out in two writes; with Nagle on, the body waits for the client's
    # delayed ACK (~40 ms on Linux) -- a stall real NetSuite doesn't have, which would add
    # to every answer with a body and swamp the configured latency.
    disable_nagle_algorithm = True
    wbufsize = 1 << 16  # ... and an answer leaves in one write (flushed after each request)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def parse_request(self) -> bool:
        self._arrived = time.monotonic()  # the request line is in: the latency clock starts
        return super().parse_request()

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if parts.path.startswith("/_sandbox/"):
            from kollrefund.sandbox.netsuite_control import control

            try:
                self._send(control(self.sandbox, self.command, parts.path, body))
            except NsError as err:
                self._send(error_response(err))
            except (KeyError, ValueError, TypeError) as exc:
                bad = NsError(400, "INVALID_CONTENT", f"Bad sandbox control request: {exc!r}")
                self._send(error_response(bad))
            return
        sb = self.sandbox
        if not sb._enter(self.command, parts.path):
            self._send(error_response(throttled()))
            return
        drop = False
        try:
            action = sb.faults.take(self.command, parts.path)
            if action == "error_500":
                raise NsError(500, "UNEXPECTED_ERROR", "An unexpected error occurred.")
            if action == "error_429":
                raise throttled()
            drop = action == "drop"
            response = self._handle(parts.path, parts.query, body)
            if sb.latency_ms:
                # NetSuite answers latency_ms after the request arrived: the sandbox's own
                # parsing, auth and bookkeeping are part of that time, not added to it (on a
                # small machine they would otherwise count against the client in `bench/`).
                # The request stays in flight meanwhile; a write is already committed.
                time.sleep(max(0.0, sb.latency_ms / 1000 - (time.monotonic() - self._arrived)))
        except NsError as err:
            response = error_response(err)
        except Exception as exc:  # a sandbox bug must still answer like NetSuite's 500
            response = error_response(NsError(500, "UNEXPECTED_ERROR", repr(exc)))
        finally:
            sb._leave()  # before answering, so a client's next request finds the slot free
        if drop:
            # Committed, then the connection closes with no answer: "outcome unknown".
            self.close_connection = True
            return
        self._send(response)

    def _handle(self, path: str, query: str, raw: bytes) -> Response:
        sb = self.sandbox
        origin = sb.url
        if path == TOKEN_PATH and self.command == "POST":
            form = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
            return (
                200,
                {"Content-Type": "application/json"},
                json.dumps(sb.m2m.issue(form, origin + TOKEN_PATH)).encode(),
            )
        auth = self.headers.get("Authorization") or ""
        if auth.startswith("Bearer "):
            sb.m2m.verify_bearer(auth)
        elif auth.startswith("OAuth "):
            host = self.headers.get("Host") or urlsplit(origin).netloc
            sb.tba.verify(self.command, f"http://{host}{path}", query, auth)
        else:
            raise invalid_login("no Authorization header")
        params = {k: v[0] for k, v in parse_qs(query).items()}
        if path == SUITEQL_PATH and self.command == "POST":
            return self._suiteql(params, parse_body(raw))
        if not path.startswith(RECORD_PATH + "/"):
            raise NsError(404, "NONEXISTENT_ID", f"The resource {path} does not exist.")
        segments = path[len(RECORD_PATH) + 1 :].split("/")
        rtype = canonical_type(segments[0])
        # [S] ?replace=apply names the sublists to replace (ref §3, section_1545297048).
        replace = frozenset(p.strip() for p in params.get("replace", "").split(",") if p.strip())
        if len(segments) == 1 and self.command == "POST":
            # [S] create: 204 + Location (ref §3, section_1545141395).
            rec = sb.store.create(rtype, parse_body(raw))
            return self._located(rec.type, rec.id)
        if len(segments) != 2 or not segments[1]:
            raise NsError(405, "METHOD_NOT_ALLOWED", f"{self.command} is not allowed on {path}.")
        ref = segments[1]
        if self.command == "GET":
            return json_response(200, record_json(sb.store, sb.store.resolve(rtype, ref), origin))
        if self.command == "PUT":
            if not ref.startswith("eid:"):
                # [S] upsert works only with an external id in the URL (section_156335203191);
                # [I] the error for PUT by internal id is not documented.
                raise NsError(405, "METHOD_NOT_ALLOWED", "PUT needs eid:<externalId> in the URL.")
            rec = sb.store.upsert(rtype, ref[4:], parse_body(raw), replace=replace)
            return self._located(rec.type, rec.id)
        if self.command == "PATCH":
            # [S] update: 204 + Location; omitted fields unchanged (ref §3, section_1545142173).
            current = sb.store.resolve(rtype, ref)
            rec = sb.store.update(current, parse_body(raw), replace=replace)
            return self._located(rec.type, rec.id)
        raise NsError(405, "METHOD_NOT_ALLOWED", f"{self.command} is not supported here.")

    def _suiteql(self, params: dict[str, str], body: dict[str, Any]) -> Response:
        # [S] POST .../suiteql?limit=&offset= with Prefer: transient (ref §5). [I] what
        # NetSuite does without the header is not documented; we refuse, as clients must send it.
        if "transient" not in (self.headers.get("Prefer") or ""):
            raise NsError(400, "INVALID_HEADER", "SuiteQL requests need the header Prefer: transient.")
        try:
            limit = int(params.get("limit", "1000"))
            offset = int(params.get("offset", "0"))
        except ValueError:
            raise NsError(400, "INVALID_PARAMETER", "limit and offset must be integers.") from None
        # [S] pages hold at most 1000 rows (ref §5, section_156414087576).
        if not 1 <= limit <= 1000 or offset < 0:
            raise NsError(400, "INVALID_PARAMETER", "limit must be 1..1000 and offset >= 0.")
        query = body.get("q")
        if not isinstance(query, str):
            raise NsError(400, "INVALID_CONTENT", 'The body must be {"q": "<SuiteQL>"}.')
        return json_response(
            200,
            suiteql(self.sandbox.store, query, limit=limit, offset=offset, origin=self.sandbox.url),
            "collection",
        )

    def _located(self, rtype: str, rid: str) -> Response:
        return 204, {"Location": f"{self.sandbox.url}{RECORD_PATH}/{rtype}/{rid}"}, b""

    def _send(self, response: Response) -> None:
        status, headers, data = response
        self.send_response(status)
        # [S] NetSuite answers with an x-netsuite-jobid header (ref §3, captured GET).
        self.send_header("x-netsuite-jobid", uuid.uuid4().hex[:16])
        for k, v in headers.items():
            self.send_header(k, v)
        if status != 204:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if status != 204:
            self.wfile.write(data)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run a local NetSuite REST sandbox.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--account-id", default="1234567_SB1")
    parser.add_argument("--concurrency-limit", type=int, default=5)
    parser.add_argument("--latency-ms", type=int, default=0)
    for name in ("consumer-key", "consumer-secret", "token-id", "token-secret"):
        parser.add_argument(f"--{name}", help="default: random")
    args = parser.parse_args(argv)
    sandbox = NetSuiteSandbox(
        args.account_id,
        args.consumer_key,
        args.consumer_secret,
        args.token_id,
        args.token_secret,
        concurrency_limit=args.concurrency_limit,
        latency_ms=args.latency_ms,
        port=args.port,
    )
    with sandbox:
        lines = [f"NetSuite sandbox at {sandbox.url} (Ctrl-C to stop)"]
        lines.append("These credentials are made up for this sandbox only:")
        lines += [f"{key}={value}" for key, value in sandbox.env().items()]
        print("\n".join(lines), flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
