"""Authentication of the local NetSuite: TBA (OAuth 1.0a) and OAuth 2.0 client credentials.

Sources are in /work/shared/reference/netsuite-rest.md §1 ("ref §1").
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from oauthlib.oauth1.rfc5849 import signature, utils  # type: ignore[import-untyped]

from kollrefund.sandbox.netsuite_store import NsError

# [S] NetSuite's 401 body for every failed login (ref §1, jacobsvante/netsuite#27).
INVALID_LOGIN_DETAIL = (
    "Invalid login attempt. For more details, see the Login Audit Trail in the NetSuite UI at "
    "Setup > Users/Roles > User Management > View Login Audit Trail."
)
TOKEN_PATH = "/services/rest/auth/oauth2/v1/token"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# [S] alg is one of PS256/384/512 or ES256/384/512 (Oracle section_162790605110).
JWT_ALGORITHMS = ["PS256", "PS384", "PS512", "ES256", "ES384", "ES512"]
ACCESS_TOKEN_SECONDS = 3600  # [S] access tokens last 60 minutes (Oracle, client credentials)


def invalid_login(why: str) -> NsError:
    """NetSuite says nothing more than INVALID_LOGIN; `why` is kept for the sandbox's log."""
    err = NsError(401, "INVALID_LOGIN", INVALID_LOGIN_DETAIL)
    err.args = (INVALID_LOGIN_DETAIL, why)
    return err


class TbaVerifier:
    """Checks an `Authorization: OAuth ...` header the way NetSuite does for TBA."""

    def __init__(
        self,
        *,
        account_id: str,
        consumer_key: str,
        consumer_secret: str,
        token_id: str,
        token_secret: str,
        max_skew_seconds: int = 300,
    ) -> None:
        self.account_id = account_id
        self.consumer_key = consumer_key
        self.consumer_secret = consumer_secret
        self.token_id = token_id
        self.token_secret = token_secret
        # [I] NetSuite's allowed clock skew is not documented; RFC 5849 leaves it to the
        # server. Five minutes is the common choice.
        self.max_skew = max_skew_seconds
        self._nonces: dict[tuple[str, str, str], int] = {}
        self._purged_at = 0
        self._lock = threading.Lock()

    def verify(self, method: str, url: str, query: str, authorization: str) -> None:
        if not authorization.startswith("OAuth "):
            raise invalid_login("not an OAuth header")
        try:
            params = dict(utils.parse_authorization_header(authorization))
        except ValueError:
            raise invalid_login("malformed OAuth header") from None
        # [S] realm = the account id exactly, case-sensitive: `1234567_sb1` fails where
        # `1234567_SB1` works (ref §1, netsuite-php#121, fylein#29).
        if params.get("realm") != self.account_id:
            raise invalid_login("realm does not match the account id")
        # [S] HMAC-SHA1 support ended in 2023.1; HMAC-SHA256 only (ref §1, section_1534941088).
        if params.get("oauth_signature_method") != "HMAC-SHA256":
            raise invalid_login("signature method is not HMAC-SHA256")
        if params.get("oauth_version", "1.0") != "1.0":
            raise invalid_login("oauth_version is not 1.0")
        key, token = params.get("oauth_consumer_key", ""), params.get("oauth_token", "")
        if not (_same(key, self.consumer_key) and _same(token, self.token_id)):
            raise invalid_login("unknown consumer key or token")
        try:
            stamp = int(params.get("oauth_timestamp", ""))
        except ValueError:
            raise invalid_login("bad timestamp") from None
        if abs(time.time() - stamp) > self.max_skew:
            raise invalid_login("timestamp too far from the server's clock")
        nonce = params.get("oauth_nonce", "")
        if not nonce:
            raise invalid_login("no nonce")
        # [S] RFC 5849 §3.4.1: method, base URI, and the oauth + query parameters; the realm
        # is excluded, and a JSON body is not signed (only form bodies are).
        collected = signature.collect_parameters(
            uri_query=query,
            headers={"Authorization": authorization},
            exclude_oauth_signature=True,
            with_realm=False,
        )
        base = signature.signature_base_string(
            method.upper(),
            signature.base_string_uri(url),
            signature.normalize_parameters(collected),
        )
        expected = _hmac_sha256(base, self.consumer_secret, self.token_secret)
        received = utils.unescape(params.get("oauth_signature", ""))
        if not _same(expected, received):
            raise invalid_login("signature does not match")
        # [S] each nonce/timestamp must be unique per request (ref §1, section_1509544929).
        with self._lock:
            now = int(time.time())
            if now != self._purged_at:  # at most once a second, not a scan per request
                self._purged_at = now
                for seen_key, seen_at in list(self._nonces.items()):
                    if now - seen_at > 2 * self.max_skew:
                        del self._nonces[seen_key]
            nonce_key = (key, str(stamp), nonce)
            if nonce_key in self._nonces:
                raise invalid_login("nonce already used")
            self._nonces[nonce_key] = now


@dataclass(frozen=True)
class M2MSettings:
    client_id: str
    public_key_pem: str
    certificate_id: str


class M2MIssuer:
    """The token endpoint of the client credentials flow and the Bearer tokens it issues."""

    def __init__(self, settings: M2MSettings | None, account_id: str) -> None:
        self.settings = settings
        self.account_id = account_id
        self._tokens: dict[str, float] = {}
        self._lock = threading.Lock()

    def issue(self, form: Mapping[str, str], token_url: str) -> dict[str, Any]:
        """[S] the request (ref §1; Oracle section_162755359851 / section_162790605110)."""
        import jwt  # only the M2M path needs PyJWT and cryptography

        if self.settings is None:
            raise _oauth_error(401, "invalid_client", "M2M is not set up in this sandbox.")
        if form.get("grant_type") != "client_credentials":
            raise _oauth_error(400, "unsupported_grant_type", "grant_type must be client_credentials")
        if form.get("client_assertion_type") != JWT_BEARER:
            raise _oauth_error(400, "invalid_request", "client_assertion_type must be jwt-bearer")
        assertion = form.get("client_assertion", "")
        try:
            header = jwt.get_unverified_header(assertion)
        except jwt.PyJWTError:
            raise _oauth_error(400, "invalid_request", "client_assertion is not a JWT") from None
        if header.get("kid") != self.settings.certificate_id:
            raise _oauth_error(400, "invalid_grant", "kid is not a known certificate id")
        if header.get("alg") not in JWT_ALGORITHMS:
            raise _oauth_error(400, "invalid_grant", "alg must be PS256/384/512 or ES256/384/512")
        try:
            claims = jwt.decode(
                assertion,
                self.settings.public_key_pem,
                algorithms=[header["alg"]],
                audience=token_url,
                issuer=self.settings.client_id,
                options={"require": ["exp", "iat", "iss", "aud"]},
            )
        except jwt.PyJWTError as exc:
            raise _oauth_error(400, "invalid_grant", f"assertion refused: {type(exc).__name__}") from None
        # [S] exp must be at most 60 minutes after iat (Oracle section_162790605110).
        if int(claims["exp"]) - int(claims["iat"]) > 3600:
            raise _oauth_error(400, "invalid_grant", "exp is more than 60 minutes after iat")
        scope = claims.get("scope", "")
        scopes = scope if isinstance(scope, list) else str(scope).replace(",", " ").split()
        # [S] scope: restlets, rest_webservices, suite_analytics, comma separated.
        if "rest_webservices" not in scopes:
            raise _oauth_error(400, "invalid_scope", "scope must include rest_webservices")
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[token] = time.time() + ACCESS_TOKEN_SECONDS
        return {"access_token": token, "expires_in": ACCESS_TOKEN_SECONDS, "token_type": "bearer"}

    def verify_bearer(self, authorization: str) -> None:
        token = authorization[len("Bearer ") :].strip()
        with self._lock:
            expires = self._tokens.get(token)
        if expires is None or expires < time.time():
            # [S] WWW-Authenticate on a bad token (ref §1, Oracle subsect_158521885412).
            realm = self.account_id.split("_")[0]
            err = invalid_login("bad bearer token")
            err.headers["WWW-Authenticate"] = f'Bearer realm="{realm}", error="invalid_token"'
            raise err

    def expire_all(self) -> None:
        """Test hook: every issued token stops working, as after 60 minutes."""
        with self._lock:
            self._tokens.clear()


def _oauth_error(status: int, error: str, description: str) -> NsError:
    """Token endpoint errors use RFC 6749's shape [I: NetSuite's exact bodies undocumented]."""
    err = NsError(status, error, description)
    err.headers["X-OAuth-Error"] = "1"
    return err


def _hmac_sha256(base: str, consumer_secret: str, token_secret: str) -> str:
    """RFC 5849 §3.4.2 with SHA-256: key = escaped secrets joined by '&', base64 digest."""
    key = f"{utils.escape(consumer_secret)}&{utils.escape(token_secret)}"
    digest = hmac.new(key.encode(), base.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
