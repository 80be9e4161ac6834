"""The NetSuite REST client: TBA or M2M auth, upsert by external id, retries, SuiteQL.

Behaviour it relies on is in /work/shared/reference/netsuite-rest.md ("ref §n").
Every failure becomes one of kollrefund's errors; no secret ever reaches a message.
Only requests is imported here; PyJWT and cryptography load when M2M is first used.
"""

from __future__ import annotations

import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any, Literal, TypeVar, cast
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from kollrefund import exact_json
from kollrefund.errors import ConfigError, ProviderRejected, ProviderUnavailable, UsageError

T = TypeVar("T")

RECORD_PATH = "/services/rest/record/v1"
SUITEQL_PATH = "/services/rest/query/v1/suiteql"
TOKEN_PATH = "/services/rest/auth/oauth2/v1/token"
# [S] external ids: letters, digits, `_` and `-` only (ref §3, section_156334828635).
EXTERNAL_ID_RE = re.compile(r"^[A-Za-z0-9_-]+$")
MAX_DETAIL = 300

# The one SuiteQL query the product sends; the sandbox recognises exactly this shape.
# [S] invoices are type 'CustInvc', amounts foreigntotal / foreignamountunpaid, column names
# come back lowercase, status needs BUILTIN.DF for its text (ref §5). [I] TO_CHAR fixes the
# date format, which otherwise follows the user's preferences; the time is in NetSuite's
# time zone for the account, not necessarily UTC. currency.symbol is the ISO code [I].
OPEN_INVOICES_QUERY = (
    "SELECT transaction.id, transaction.tranid, transaction.externalid, transaction.entity, "
    "BUILTIN.DF(transaction.entity) AS customername, BUILTIN.DF(transaction.status) AS status, "
    "currency.symbol AS currency, transaction.foreigntotal, transaction.foreignamountunpaid, "
    "TO_CHAR(transaction.lastmodifieddate, 'YYYY-MM-DD HH24:MI:SS') AS lastmodified "
    "FROM transaction INNER JOIN currency ON currency.id = transaction.currency "
    "WHERE transaction.type = 'CustInvc' AND transaction.foreignamountunpaid > 0{since} "
    "ORDER BY transaction.id"
)
OPEN_INVOICES_SINCE = " AND transaction.lastmodifieddate >= TO_DATE('{date}', 'YYYY-MM-DD')"


def open_invoices_query(since: date | None = None) -> str:
    clause = OPEN_INVOICES_SINCE.format(date=since.isoformat()) if since else ""
    return OPEN_INVOICES_QUERY.format(since=clause)


def status_name(value: Any) -> str:
    """'Open' from {"id","refName":"Open"}, "Invoice : Open" (SuiteQL BUILTIN.DF) or "Open"."""
    if isinstance(value, dict):
        value = value.get("refName", "")
    text = str(value or "")
    return text.split(" : ", 1)[1] if " : " in text else text


def amount(value: Any) -> Decimal:
    """NetSuite sends amounts as numbers or strings (ref §5 [I]); never go through float math."""
    return Decimal(str(value))


def origin_for(account_id: str) -> str:
    """[S] host = account id lowercased with `_` → `-` (ref §1, jacobsvante/netsuite)."""
    return f"https://{account_id.lower().replace('_', '-')}.suitetalk.api.netsuite.com"


def worker_count(concurrency: int) -> int:
    """Threads for `concurrency` slots: the spare ones prepare requests while the slots are busy."""
    return max(1, concurrency) + max(2, concurrency // 2)


@dataclass(frozen=True)
class NetSuiteConfig:
    account_id: str
    base_url: str | None = None
    auth: Literal["tba", "m2m"] = "tba"
    consumer_key: str | None = field(default=None, repr=False)
    consumer_secret: str | None = field(default=None, repr=False)
    token_id: str | None = field(default=None, repr=False)
    token_secret: str | None = field(default=None, repr=False)
    client_id: str | None = field(default=None, repr=False)
    certificate_id: str | None = None
    private_key_pem: str | None = field(default=None, repr=False)
    concurrency: int = 5
    timeout_seconds: float = 30
    max_retries: int = 6
    backoff_base: float = 0.25
    backoff_cap: float = 8.0

    @property
    def origin(self) -> str:
        return (self.base_url or origin_for(self.account_id)).rstrip("/")


class AdaptiveLimiter:
    """At most `limit` requests in flight; the limit is cut on a 429 and grows back.

    A wave of 429s from requests that all started under the same limit cuts it once
    (each cut starts a new epoch). After `2 * limit` (at least 4) successes in a row the
    limit grows by one, never above `maximum`, and the limit it grew from is remembered as
    `good` (it ran clean). A 429 while probing above `good` goes straight back to `good`;
    a 429 at or below it halves the limit (NetSuite's capacity shrank: other integrations
    share the account's limit) -- so a setting above the account's limit settles at the
    limit and only probes one above it now and then, instead of halving to half the limit
    every time a probe fails.
    """

    def __init__(self, maximum: int) -> None:
        self.maximum = max(1, maximum)
        self.limit = self.maximum
        self.lowest = self.maximum
        self.good = 0  # highest limit seen to run clean; 0: none yet
        self.cuts = 0
        self._in_flight = 0
        self._epoch = 0
        self._streak = 0
        self._cond = threading.Condition()

    def acquire(self) -> int:
        with self._cond:
            while self._in_flight >= self.limit:
                self._cond.wait()
            self._in_flight += 1
            return self._epoch

    def release(self, epoch: int, outcome: Literal["ok", "throttled", "failed"]) -> None:
        with self._cond:
            self._in_flight -= 1
            if outcome == "throttled":
                self._streak = 0
                if epoch == self._epoch:
                    if 0 < self.good < self.limit:
                        self.limit = self.good  # the probe above a clean limit failed
                    else:
                        self.limit = max(1, self.limit // 2)
                        self.good = 0
                    self.lowest = min(self.lowest, self.limit)
                    self.cuts += 1
                    self._epoch += 1
            elif outcome == "ok":
                self._streak += 1
                if self._streak >= max(4, 2 * self.limit) and self.limit < self.maximum:
                    self.good = max(self.good, self.limit)
                    self.limit += 1
                    self._streak = 0
            self._cond.notify_all()


class NetSuiteClient:
    def __init__(
        self,
        config: NetSuiteConfig,
        *,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        no_backoff: bool | None = None,
        rng: Callable[[], float] = random.random,
    ) -> None:
        _check_config(config)
        self.config = config
        self.origin = config.origin
        self._own_session = session is None
        if session is None:
            session = requests.Session()
            size = max(10, worker_count(config.concurrency))
            session.mount("http://", HTTPAdapter(pool_maxsize=size))
            session.mount("https://", HTTPAdapter(pool_maxsize=size))
            # Proxies and the CA bundle come from the environment (HTTPS_PROXY, NO_PROXY,
            # REQUESTS_CA_BUNDLE...). requests would look them up again on every request,
            # scanning os.environ twice each time -- a measurable share of a request's CPU at
            # 20 in flight. Every request goes to this one origin, so resolving them once is
            # the same answer. It also keeps ~/.netrc from replacing an M2M Bearer header.
            env = session.merge_environment_settings(self.origin, {}, None, None, None)
            session.proxies.update(env["proxies"] or {})
            session.verify = env["verify"]
            session.trust_env = False
        self._session = session
        self._sleep = sleep
        self._rng = rng
        if no_backoff is None:
            no_backoff = os.environ.get("KOLLREFUND_NO_BACKOFF", "") not in ("", "0")
        self._no_backoff = no_backoff
        self.limiter = AdaptiveLimiter(config.concurrency)
        self._timeout = (min(10.0, config.timeout_seconds), config.timeout_seconds)
        self._oauth1: Any = None
        self._m2m: Any = None
        if config.auth == "tba":
            from requests_oauthlib import OAuth1

            # [S] HMAC-SHA256, realm = the account id exactly (ref §1). A JSON body is
            # not signed; query parameters (limit, offset, replace) are.
            self._oauth1 = OAuth1(
                config.consumer_key,
                config.consumer_secret,
                config.token_id,
                config.token_secret,
                signature_method="HMAC-SHA256",
                realm=config.account_id,
            )
        else:
            from kollrefund.netsuite_auth import M2MToken

            self._m2m = M2MToken(
                token_url=self.origin + TOKEN_PATH,
                account_id=config.account_id,
                client_id=cast(str, config.client_id),
                certificate_id=cast(str, config.certificate_id),
                private_key_pem=cast(str, config.private_key_pem),
                session=self._session,
                timeout=self._timeout,
            )

    def close(self) -> None:
        if self._own_session:
            self._session.close()

    def __enter__(self) -> NetSuiteClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def limit(self) -> int:
        return self.limiter.limit

    # ------------------------------------------------------------ records
    def upsert(self, record_type: str, external_id: str, body: dict[str, Any]) -> str:
        """[S] PUT .../<type>/eid:<externalId> creates or updates (ref §3); safe to retry."""
        check_external_id(external_id)
        ref = f"eid:{external_id}"
        resp = self._send("PUT", f"{RECORD_PATH}/{record_type}/{ref}", body=body, idempotent=True)
        rid = _id_from_location(resp.headers.get("Location"))
        if rid is None:
            rid = str(self.get(record_type, ref)["id"])
        return rid

    def create(self, record_type: str, body: dict[str, Any]) -> str:
        """A plain POST: never retried once it may have reached NetSuite. Prefer upsert."""
        resp = self._send("POST", f"{RECORD_PATH}/{record_type}", body=body, idempotent=False)
        rid = _id_from_location(resp.headers.get("Location"))
        if rid is None:
            raise ProviderUnavailable(f"NetSuite created a {record_type} but sent no Location.")
        return rid

    def patch(
        self,
        record_type: str,
        internal_id: str,
        body: dict[str, Any],
        *,
        replace: str | None = None,
    ) -> None:
        """[S] keyed sublist lines merge; `replace="apply"` drops unmatched lines (ref §3)."""
        params = {"replace": replace} if replace else None
        self._send(
            "PATCH",
            f"{RECORD_PATH}/{record_type}/{internal_id}",
            body=body,
            params=params,
            idempotent=True,
        )

    def get(self, record_type: str, ref: str, *, expand: bool = True) -> dict[str, Any]:
        """`ref` is an internal id or "eid:<externalId>"; `expand=False` leaves sublists as
        links (ref §3), a smaller answer when only body fields (status, amounts) are read."""
        resp = self._send(
            "GET",
            f"{RECORD_PATH}/{record_type}/{ref}",
            params={"expandSubResources": "true"} if expand else None,
            idempotent=True,
        )
        return cast(dict[str, Any], exact_json.loads(resp.content))

    def suiteql(self, query: str, *, page_size: int = 1000) -> Iterator[dict[str, Any]]:
        """Rows with lowercase keys, page by page until hasMore is false (ref §5).

        [S] NetSuite serves at most 100,000 rows this way; ORDER BY id keeps pages stable.
        """
        page_size = max(1, min(1000, page_size))
        offset = 0
        while True:
            resp = self._send(
                "POST",
                SUITEQL_PATH,
                body={"q": query},
                params={"limit": str(page_size), "offset": str(offset)},
                headers={"Prefer": "transient"},
                idempotent=True,  # a read: safe to repeat
            )
            page = exact_json.loads(resp.content)
            items = page.get("items") or []
            for item in items:
                yield {k: v for k, v in item.items() if k != "links"}
            if not page.get("hasMore") or not items:
                return
            offset += len(items)

    def run_all(
        self,
        jobs: Sequence[Callable[[], T]],
        *,
        on_done: Callable[[int, T | Exception], None] | None = None,
    ) -> list[T | Exception]:
        """Run jobs on a few more threads than `config.concurrency`; results (or exceptions) in job order.

        Requests inside the jobs pass through the adaptive limiter, so at most `limit`
        of them are in flight; a 429 halves it, a run of successes grows it back.
        `on_done(index, result)` is called in this thread as each job finishes.
        """
        results: list[T | Exception | None] = [None] * len(jobs)
        # More threads than slots: while `limit` requests are at NetSuite, the spare threads
        # sign the next ones (or sleep out a backoff), so a freed slot is taken at once.
        workers = worker_count(self.config.concurrency)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="netsuite") as pool:
            futures = {pool.submit(job): i for i, job in enumerate(jobs)}
            for fut in as_completed(futures):
                i = futures[fut]
                outcome: T | Exception
                try:
                    outcome = fut.result()
                except Exception as exc:
                    outcome = exc
                results[i] = outcome
                if on_done is not None:
                    on_done(i, outcome)
        return cast(list[T | Exception], results)

    # -------------------------------------------------------------- HTTP
    def _send(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        idempotent: bool,
    ) -> requests.Response:
        what = f"{method} {path.removeprefix(RECORD_PATH + '/')}"
        url = self.origin + path
        h = {"Content-Type": "application/json", "Accept": "application/json", **(headers or {})}
        data = None if body is None else _dumps(body)
        attempts = self.config.max_retries + 1
        # proxies / CA bundle: resolved once in __init__ for our own session (trust_env off)
        send_settings: dict[str, Any] = (
            dict(self._session.merge_environment_settings(url, {}, None, None, None)) if self._session.trust_env else {}
        )
        send_settings.pop("stream", None)
        last, last_status = "no attempt", None
        token_refreshed = False
        for attempt in range(attempts):
            if attempt:
                self._pause(attempt - 1)
            auth: Any = self._oauth1
            if self._m2m is not None:
                try:
                    h["Authorization"] = f"Bearer {self._m2m.bearer()}"
                except ProviderUnavailable as exc:
                    last, last_status = exc.message, exc.http_status
                    continue
            # Sign and encode before taking a slot: a slot stands for a request NetSuite is
            # working on, and the client's own CPU should not hold one (the bound is L / C).
            prepared = self._session.prepare_request(
                requests.Request(method, url, params=params, data=data, headers=h, auth=auth)
            )
            epoch = self.limiter.acquire()
            resp: requests.Response | None = None
            try:
                # stream=True: the slot is freed once NetSuite's answer has begun (it is no
                # longer working on the request); the body is read just after.
                resp = self._session.send(prepared, timeout=self._timeout, stream=True, **send_settings)
            except requests.RequestException as exc:
                self.limiter.release(epoch, "failed")
                lost: requests.RequestException | None = exc
            else:
                status = resp.status_code
                self.limiter.release(epoch, "throttled" if status == 429 else "failed" if status >= 500 else "ok")
                try:
                    resp.content  # noqa: B018 -- read the body now, before the connection goes back
                    lost = None
                except requests.RequestException as exc:
                    lost = exc
            if lost is not None or resp is None:
                assert lost is not None
                if not idempotent and not _never_sent(lost):
                    raise ProviderUnavailable(
                        f"NetSuite did not answer {what} ({type(lost).__name__}); whether it "
                        "was recorded is unknown. Check NetSuite before trying again.",
                        hint=None,
                    ) from None
                last, last_status = type(lost).__name__, None
                continue
            if status < 300:
                return resp
            if status == 429:
                # [S] "Request blocked": the request was not processed, so even a POST may
                # be sent again (ref §4). No Retry-After is sent; back off with jitter.
                last, last_status = _describe(resp), status
                continue
            if status >= 500:
                if not idempotent:
                    raise ProviderUnavailable(
                        f"NetSuite failed {what} with HTTP {status}; whether it was recorded "
                        "is unknown. Check NetSuite before trying again.",
                        hint=None,
                        http_status=status,
                        request_id=resp.headers.get("x-netsuite-jobid"),
                    )
                last, last_status = _describe(resp), status
                continue
            if status == 401 and self._m2m is not None and not token_refreshed:
                self._m2m.invalidate()  # expired or revoked token: fetch a new one once
                token_refreshed = True
                continue
            raise self._rejected(what, resp)
        raise ProviderUnavailable(
            f"NetSuite kept failing {what} ({last}) after {attempts} attempts.",
            http_status=last_status,
        )

    def _pause(self, n: int) -> None:
        """[S] wait longer each time and don't retry in lockstep (ref §4): full jitter."""
        cfg = self.config
        delay = 0.0 if self._no_backoff else self._rng() * min(cfg.backoff_cap, cfg.backoff_base * (2**n))
        self._sleep(delay)

    def _rejected(self, what: str, resp: requests.Response) -> ProviderRejected:
        code, detail = _error_detail(resp)
        if resp.status_code == 401:
            return ProviderRejected(
                f"NetSuite refused the credentials for account {self.config.account_id} "
                f"({code or 'INVALID_LOGIN'}) on {what}.",
                hint="Check the consumer key and secret, the token id and secret (or the M2M "
                "client id, certificate id and key), and that the account id is written "
                "exactly as NetSuite shows it, e.g. 1234567_SB1.",
                code=code or "INVALID_LOGIN",
                http_status=401,
                request_id=resp.headers.get("x-netsuite-jobid"),
            )
        return ProviderRejected(
            f"NetSuite rejected {what} ({_describe(resp)}): {detail}",
            code=code,
            http_status=resp.status_code,
            request_id=resp.headers.get("x-netsuite-jobid"),
        )


def check_external_id(external_id: str) -> None:
    if not EXTERNAL_ID_RE.match(external_id):
        raise UsageError(f"'{external_id}' cannot be a NetSuite external id: use only letters, digits, '_' and '-'.")


def _check_config(cfg: NetSuiteConfig) -> None:
    if not cfg.account_id:
        raise ConfigError("netsuite.account_id is not set.", hint="Set KOLLREFUND_NETSUITE__ACCOUNT_ID.")
    if cfg.base_url:
        parts = urlsplit(cfg.base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
            raise ConfigError(
                "netsuite.base_url must be an origin such as https://1234567-sb1.suitetalk.api.netsuite.com (no path)."
            )
    if cfg.auth == "tba":
        need = {
            "consumer_key": cfg.consumer_key,
            "consumer_secret": cfg.consumer_secret,
            "token_id": cfg.token_id,
            "token_secret": cfg.token_secret,
        }
    elif cfg.auth == "m2m":
        need = {
            "client_id": cfg.client_id,
            "certificate_id": cfg.certificate_id,
            "private_key_pem": cfg.private_key_pem,
        }
    else:
        raise ConfigError(f"netsuite.auth must be 'tba' or 'm2m', not {cfg.auth!r}.")
    missing = [f"netsuite.{k}" for k, v in need.items() if not v]
    if missing:
        raise ConfigError(f"NetSuite {cfg.auth.upper()} needs {', '.join(missing)}.")
    if cfg.concurrency < 1 or cfg.max_retries < 0 or cfg.timeout_seconds <= 0:
        raise ConfigError("netsuite.concurrency must be ≥ 1, retries ≥ 0, timeout > 0.")


def _dumps(body: dict[str, Any]) -> bytes:
    return exact_json.dumps(body).encode()  # amounts as exact JSON numbers, never via float


def _id_from_location(location: str | None) -> str | None:
    """[S] 204 + Location: .../record/v1/<type>/<id> (ref §3)."""
    if not location:
        return None
    tail = urlsplit(location).path.rstrip("/").rsplit("/", 1)[-1]
    return tail if tail and not tail.startswith("eid:") else None


def _error_detail(resp: requests.Response) -> tuple[str | None, str]:
    """o:errorCode and detail from NetSuite's error body (ref §3), shortened."""
    try:
        body = resp.json()
    except ValueError:
        return None, (resp.reason or f"HTTP {resp.status_code}")[:MAX_DETAIL]
    if not isinstance(body, dict):
        return None, f"HTTP {resp.status_code}"
    details = body.get("o:errorDetails") or []
    first = details[0] if details and isinstance(details[0], dict) else {}
    code = first.get("o:errorCode") or body.get("error")
    detail = str(first.get("detail") or body.get("error_description") or body.get("title") or "")
    if len(detail) > MAX_DETAIL:
        detail = detail[: MAX_DETAIL - 1] + "…"
    return (str(code) if code else None), detail


def _describe(resp: requests.Response) -> str:
    code, _detail = _error_detail(resp)
    return f"HTTP {resp.status_code}" + (f" {code}" if code else "")


def _never_sent(exc: requests.RequestException) -> bool:
    """True when the request cannot have reached NetSuite (no connection was made)."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    if isinstance(exc, requests.exceptions.ConnectionError):
        from urllib3.exceptions import MaxRetryError, NewConnectionError

        for arg in exc.args:
            if isinstance(arg, MaxRetryError) and isinstance(arg.reason, NewConnectionError):
                return True
    return False
