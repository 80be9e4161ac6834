"""The error family and the exit codes that scripts and cron rely on (SPEC: Exit status).

Every error the program expects carries its exit code and a one-line message that
says what happened, the ids involved, and what to do next. The CLI's single error
boundary turns them into that line on stderr; anything else is a bug (exit 1).
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    BUG = 1
    USAGE = 2
    CONFIG = 3
    REFUSED = 4
    REJECTED = 5
    UNAVAILABLE = 6
    SYNC_INCOMPLETE = 7
    DRIFT = 8
    INTERRUPTED = 130


class KollrefundError(Exception):
    """An expected failure: one sentence for the operator, and an exit code."""

    exit_code: ExitCode = ExitCode.BUG

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} {self.hint}"
        return self.message


class UsageError(KollrefundError):
    """Bad flag, amount, file or unknown id. Nothing changed."""

    exit_code = ExitCode.USAGE


class NotFound(UsageError):
    """An id the cache does not know."""


class ConfigError(KollrefundError):
    """Configuration missing or invalid. Nothing changed."""

    exit_code = ExitCode.CONFIG


class RefusedError(KollrefundError):
    """Refused by one of our rules (over-refund, wrong state, live key, no confirmation)."""

    exit_code = ExitCode.REFUSED


class DomainError(RefusedError):
    """An impossible move in the payment state machine; raised by pure domain code."""


class ProviderRejected(KollrefundError):
    """Stripe or NetSuite said no (card declined, invalid request). The local record says so."""

    exit_code = ExitCode.REJECTED

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        code: str | None = None,
        request_id: str | None = None,
        http_status: int | None = None,
        psp_reference: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.code = code
        self.request_id = request_id
        self.http_status = http_status
        self.psp_reference = psp_reference  # e.g. the PaymentIntent a declined charge left behind


class ProviderUnavailable(KollrefundError):
    """Stripe or NetSuite unreachable, or the outcome unknown. Safe to run again."""

    exit_code = ExitCode.UNAVAILABLE

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = "It is safe to run the same command again.",
        request_id: str | None = None,
        http_status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.request_id = request_id
        self.http_status = http_status
        self.retry_after = retry_after


class SyncIncomplete(KollrefundError):
    exit_code = ExitCode.SYNC_INCOMPLETE


class DriftFound(KollrefundError):
    exit_code = ExitCode.DRIFT
