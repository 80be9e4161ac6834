"""OAuth 2.0 client credentials (M2M) for NetSuite: a signed JWT buys a Bearer token.

[S] Oracle section_162755359851 / section_162790605110 (ref §1): POST the token URL,
form-encoded, grant_type=client_credentials, client_assertion_type=jwt-bearer,
client_assertion=<JWT with kid = certificate id, iss = client id, scope, aud = token URL,
exp at most 60 minutes after iat>, signed PS256/384/512 or ES256/384/512.
Imported only when M2M is configured: PyJWT and cryptography are slow to import.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import jwt
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from kollrefund.errors import ConfigError, ProviderRejected, ProviderUnavailable

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_SECONDS = 1800  # well inside the 60-minute ceiling
EARLY_REFRESH_SECONDS = 60


def algorithm_for(private_key_pem: str) -> tuple[str, Any]:
    """(alg, key): PS256 for RSA keys, ES256/384/512 for P-256/384/521 keys."""
    try:
        key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
    except (ValueError, TypeError):
        # Never echo the key: only say that it could not be read.
        raise ConfigError("netsuite.private_key_pem is not a readable unencrypted PEM private key.") from None
    if isinstance(key, rsa.RSAPrivateKey):
        return "PS256", key
    if isinstance(key, ec.EllipticCurvePrivateKey):
        alg = {256: "ES256", 384: "ES384", 521: "ES512"}.get(key.curve.key_size)
        if alg:
            return alg, key
    raise ConfigError("netsuite.private_key_pem must be an RSA or EC (P-256/384/521) key.")


class M2MToken:
    """A cached access token, fetched again shortly before it expires; thread-safe."""

    def __init__(
        self,
        *,
        token_url: str,
        account_id: str,
        client_id: str,
        certificate_id: str,
        private_key_pem: str,
        session: requests.Session,
        timeout: tuple[float, float],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.token_url = token_url
        self.account_id = account_id
        self.client_id = client_id
        self.certificate_id = certificate_id
        self._alg, self._key = algorithm_for(private_key_pem)
        self._session = session
        self._timeout = timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_at = 0.0

    def bearer(self) -> str:
        with self._lock:
            if self._token is None or self._clock() >= self._expires_at:
                self._token, self._expires_at = self._fetch()
            return self._token

    def invalidate(self) -> None:
        with self._lock:
            self._token = None

    def assertion(self) -> str:
        now = int(self._clock())
        claims = {
            "iss": self.client_id,
            "scope": "rest_webservices",
            "aud": self.token_url,
            "iat": now,
            "exp": now + ASSERTION_SECONDS,
        }
        return jwt.encode(
            claims,
            self._key,
            algorithm=self._alg,
            headers={"kid": self.certificate_id, "typ": "JWT"},
        )

    def _fetch(self) -> tuple[str, float]:
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": JWT_BEARER,
            "client_assertion": self.assertion(),
        }
        try:
            resp = self._session.post(
                self.token_url,
                data=form,
                timeout=self._timeout,
                headers={"Accept": "application/json"},
            )
        except requests.RequestException as exc:
            raise ProviderUnavailable(f"Could not reach NetSuite's token endpoint ({type(exc).__name__}).") from None
        if resp.status_code == 429 or resp.status_code >= 500:
            raise ProviderUnavailable(
                f"NetSuite's token endpoint answered HTTP {resp.status_code}.",
                http_status=resp.status_code,
            )
        body: Any
        try:
            body = resp.json()
        except ValueError:
            body = {}
        if resp.status_code != 200 or not isinstance(body, dict) or "access_token" not in body:
            error = body.get("error") if isinstance(body, dict) else None
            raise ProviderRejected(
                f"NetSuite refused the M2M client credentials for account {self.account_id} "
                f"({error or 'HTTP ' + str(resp.status_code)}).",
                hint="Check netsuite.client_id, netsuite.certificate_id and the private key "
                "mapped to that certificate in NetSuite.",
                code=str(error) if error else None,
                http_status=resp.status_code,
            )
        lifetime = float(body.get("expires_in") or 3600)
        return str(body["access_token"]), self._clock() + max(0.0, lifetime - EARLY_REFRESH_SECONDS)
