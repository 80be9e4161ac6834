"""Stripe, through the official SDK, with our idempotency keys and our errors.

The gateway reports what Stripe says; it never decides whether money may move
(that is the domain's and the actions' job). It is imported only by commands
that talk to Stripe, so read-only commands never pay for ``import stripe``.

SDK settings are explicit (reference/stripe-and-localstripe.md): ``StripeClient``
defaults to 0 retries and an 80 s timeout, and generates a random idempotency
key per call, which protects retries inside one process only. Every POST here
carries a key we stored before the call, so a rerun after a crash is safe too.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import stripe

from kollrefund.domain import iso
from kollrefund.errors import ConfigError, ProviderRejected, ProviderUnavailable
from kollrefund.money import Money

LIVE_PREFIXES = ("sk_live_", "rk_live_")


def is_live_key(api_key: str) -> bool:
    return api_key.startswith(LIVE_PREFIXES)


def stripe_time(created: int | None) -> str:
    """Stripe's ``created`` (unix seconds) as SPEC's UTC ISO 8601 to the second."""
    if created is None:
        return iso(datetime.now(UTC))
    return iso(datetime.fromtimestamp(int(created), UTC))


@dataclass(frozen=True, slots=True)
class StripeRefund:
    id: str
    amount: Money
    status: str  # pending, requires_action, succeeded, failed, canceled
    reason: str | None
    created_at: str
    local_id: str | None  # metadata.kollrefund_refund_id
    failure_reason: str | None = None

    @property
    def counts(self) -> bool:
        return self.status in ("pending", "requires_action", "succeeded")


@dataclass(frozen=True, slots=True)
class StripePayment:
    """A PaymentIntent with its latest charge and refunds, as Stripe sees them now."""

    id: str
    status: str
    amount: Money
    captured: Money
    capturable: Money
    created_at: str
    metadata: Mapping[str, str]
    capture_before: str | None = None
    customer: str | None = None
    refunds: list[StripeRefund] = field(default_factory=list)

    @property
    def refunded(self) -> Money:
        total = Money.zero(self.amount.currency)
        for r in self.refunds:
            if r.counts:
                total = total + r.amount
        return total


def _metadata(obj: Any) -> dict[str, str]:
    # v16 StripeObjects are not dicts: .get() and dict() do not work on them
    meta = getattr(obj, "metadata", None)
    return dict(meta.to_dict()) if meta is not None else {}


def _translate(exc: stripe.StripeError, doing: str) -> Exception:
    """A Stripe SDK error as one of ours, keeping Stripe's code and request id."""
    request_id = getattr(exc, "request_id", None)
    status = getattr(exc, "http_status", None)
    err = getattr(exc, "error", None)
    code = getattr(err, "code", None) or getattr(exc, "code", None)
    message = (getattr(err, "message", None) or exc.user_message or str(exc) or "").strip().rstrip(".")
    ref = f" (Stripe request {request_id})" if request_id else ""
    if isinstance(exc, stripe.CardError):
        decline = getattr(err, "decline_code", None) or code
        pi = getattr(err, "payment_intent", None)  # Stripe keeps the declined PaymentIntent
        return ProviderRejected(
            f"Stripe declined {doing}: {message} [{decline}]{ref}.",
            hint="Ask the customer for another payment method.",
            code=decline,
            request_id=request_id,
            http_status=status,
            psp_reference=pi if isinstance(pi, str) or pi is None else getattr(pi, "id", None),
        )
    if isinstance(exc, (stripe.AuthenticationError, stripe.PermissionError)):
        return ConfigError(
            f"Stripe refused the API key while {doing} ({status}){ref}.",
            hint="Check stripe.api_key (KOLLREFUND_STRIPE__API_KEY); a restricted key needs write access "
            "to PaymentIntents and Refunds.",
        )
    # 409 (idempotency_key_in_use, or a conflict on the object) means an earlier request
    # with our key may still be executing in Stripe: the outcome is unknown, not refused.
    if (
        isinstance(exc, (stripe.APIConnectionError, stripe.RateLimitError))
        or (status is not None and (status >= 500 or status == 409))
        or code in ("idempotency_key_in_use", "lock_timeout")
    ):
        return ProviderUnavailable(
            f"Stripe could not be reached or did not answer while {doing}{ref}; the outcome is unknown.",
            hint="It is safe to run the same command again (or `kollrefund resume`).",
            request_id=request_id,
            http_status=status,
        )
    return ProviderRejected(
        f"Stripe refused {doing}: {message}{f' [{code}]' if code else ''}{ref}.",
        code=code,
        request_id=request_id,
        http_status=status,
    )


class StripeGateway:
    def __init__(
        self,
        *,
        api_key: str,
        api_base: str | None = None,
        timeout_seconds: float = 20.0,
        max_network_retries: int = 2,
    ) -> None:
        self._client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base} if api_base else {},
            http_client=stripe.RequestsClient(timeout=timeout_seconds),
            max_network_retries=max_network_retries,
        )

    # -- reading ---------------------------------------------------------------------

    def payment(self, payment_intent_id: str) -> StripePayment:
        """The PaymentIntent, its charge and every refund on it."""
        doing = f"reading {payment_intent_id}"
        try:
            pi = self._client.v1.payment_intents.retrieve(payment_intent_id, {"expand": ["latest_charge"]})
            refunds = list(self._refunds(payment_intent_id))
        except stripe.StripeError as exc:
            raise _translate(exc, doing) from None
        return self._payment(pi, refunds)

    def find_payment(self, payment_intent_id: str) -> StripePayment | None:
        """Like :meth:`payment`, but ``None`` when Stripe has no such PaymentIntent."""
        try:
            return self.payment(payment_intent_id)
        except ProviderRejected as exc:
            if exc.code == "resource_missing" or exc.http_status == 404:
                return None
            raise

    def _refunds(self, payment_intent_id: str) -> Iterator[StripeRefund]:
        page = self._client.v1.refunds.list({"payment_intent": payment_intent_id, "limit": 100})
        for r in page.auto_paging_iter():
            yield self._refund(r)

    def refunds_of(self, payment_intent_id: str) -> list[StripeRefund]:
        try:
            return list(self._refunds(payment_intent_id))
        except stripe.StripeError as exc:
            raise _translate(exc, f"listing the refunds of {payment_intent_id}") from None

    def refunds_since(self, created_gte: int) -> list[tuple[str | None, StripeRefund]]:
        """Every refund created at or after ``created_gte`` (unix seconds), with its PaymentIntent id."""
        out: list[tuple[str | None, StripeRefund]] = []
        try:
            page = self._client.v1.refunds.list({"created": {"gte": created_gte}, "limit": 100})
            for r in page.auto_paging_iter():
                pi = getattr(r, "payment_intent", None)
                out.append((pi if isinstance(pi, str) or pi is None else pi.id, self._refund(r)))
        except stripe.StripeError as exc:
            raise _translate(exc, "listing recent refunds") from None
        return out

    def find_payment_by_metadata(
        self, *, payment_id: str, customer: str | None, created_after: int
    ) -> StripePayment | None:
        """The PaymentIntent that ``collect`` made for ``payment_id``, found by its metadata.

        This is how a rerun finds what it already did after Stripe's 24-hour
        idempotency window has passed.
        """
        params: dict[str, Any] = {"limit": 100, "created": {"gte": created_after}}
        if customer:
            params["customer"] = customer
        try:
            for pi in self._client.v1.payment_intents.list(params).auto_paging_iter():  # type: ignore[arg-type]
                if _metadata(pi).get("kollrefund_payment_id") == payment_id:
                    return self.payment(pi.id)
        except stripe.StripeError as exc:
            raise _translate(exc, f"looking for the PaymentIntent of {payment_id}") from None
        return None

    # -- moving money (every call with our idempotency key) ---------------------------

    def create_payment_intent(
        self,
        *,
        amount: Money,
        payment_method: str,
        customer: str | None,
        manual_capture: bool,
        metadata: Mapping[str, str],
        idempotency_key: str,
    ) -> StripePayment:
        params: dict[str, Any] = {
            "amount": amount.minor,
            "currency": amount.currency,
            "payment_method": payment_method,
            "confirm": True,
            "capture_method": "manual" if manual_capture else "automatic",
            "payment_method_types": ["card"],
            "metadata": dict(metadata),
        }
        if customer:
            params["customer"] = customer
        doing = f"the charge of {amount.display()}"
        try:
            pi = self._client.v1.payment_intents.create(
                params,  # type: ignore[arg-type]
                {"idempotency_key": idempotency_key},
            )
        except stripe.StripeError as exc:
            raise _translate(exc, doing) from None
        return self.payment(pi.id)

    def capture(self, payment_intent_id: str, amount: Money, *, idempotency_key: str) -> StripePayment:
        try:
            self._client.v1.payment_intents.capture(
                payment_intent_id, {"amount_to_capture": amount.minor}, {"idempotency_key": idempotency_key}
            )
        except stripe.StripeError as exc:
            raise _translate(exc, f"the capture of {amount.display()} on {payment_intent_id}") from None
        return self.payment(payment_intent_id)

    def cancel(self, payment_intent_id: str, *, idempotency_key: str) -> StripePayment:
        try:
            self._client.v1.payment_intents.cancel(payment_intent_id, {}, {"idempotency_key": idempotency_key})
        except stripe.StripeError as exc:
            raise _translate(exc, f"the cancellation of {payment_intent_id}") from None
        return self.payment(payment_intent_id)

    def create_refund(
        self,
        *,
        payment_intent_id: str,
        amount: Money,
        reason: str | None,
        local_id: str,
        idempotency_key: str,
    ) -> StripeRefund:
        params: dict[str, Any] = {
            "payment_intent": payment_intent_id,
            "amount": amount.minor,
            "metadata": {"kollrefund_refund_id": local_id},
        }
        if reason:
            params["reason"] = reason
        try:
            refund = self._client.v1.refunds.create(
                params,  # type: ignore[arg-type]
                {"idempotency_key": idempotency_key},
            )
        except stripe.StripeError as exc:
            raise _translate(exc, f"the refund of {amount.display()} on {payment_intent_id}") from None
        return self._refund(refund)

    # -- mapping ---------------------------------------------------------------------

    @staticmethod
    def _refund(r: Any) -> StripeRefund:
        metadata = _metadata(r)
        return StripeRefund(
            id=r.id,
            amount=Money(int(r.amount), r.currency),
            status=r.status,
            reason=getattr(r, "reason", None),
            created_at=stripe_time(r.created),
            local_id=metadata.get("kollrefund_refund_id"),
            failure_reason=getattr(r, "failure_reason", None),
        )

    @staticmethod
    def _payment(pi: Any, refunds: list[StripeRefund]) -> StripePayment:
        currency = pi.currency
        charge = pi.latest_charge if not isinstance(pi.latest_charge, str) else None
        received = getattr(pi, "amount_received", None)
        if received is None and charge is not None:
            received = getattr(charge, "amount_captured", None)
        captured = int(received or 0) if pi.status in ("succeeded",) else 0
        capturable = int(getattr(pi, "amount_capturable", 0) or 0) if pi.status == "requires_capture" else 0
        capture_before = None
        if charge is not None:
            details = getattr(charge, "payment_method_details", None)
            card = getattr(details, "card", None) if details is not None else None
            cb = getattr(card, "capture_before", None) if card is not None else None
            capture_before = stripe_time(cb) if cb else None
        customer = pi.customer if isinstance(pi.customer, str) or pi.customer is None else pi.customer.id
        return StripePayment(
            id=pi.id,
            status=pi.status,
            amount=Money(int(pi.amount), currency),
            captured=Money(captured, currency),
            capturable=Money(capturable, currency),
            created_at=stripe_time(pi.created),
            metadata=_metadata(pi),
            capture_before=capture_before,
            customer=customer,
            refunds=refunds,
        )
