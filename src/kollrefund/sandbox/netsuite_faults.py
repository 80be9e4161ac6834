"""Injected failures and request statistics of the local NetSuite (test hooks only)."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Any, Literal

FaultAction = Literal["drop", "error_500", "error_429"]


@dataclass
class Fault:
    method: str
    path: re.Pattern[str]
    action: FaultAction
    times: int


class Faults:
    """Injected failures, matched by HTTP method and a regex searched in the URL path."""

    def __init__(self) -> None:
        self._items: list[Fault] = []
        self._lock = threading.Lock()

    def add(self, *, method: str, path: str, action: FaultAction, times: int = 1) -> None:
        if action not in ("drop", "error_500", "error_429"):
            raise ValueError(f"unknown fault action {action!r}")
        with self._lock:
            self._items.append(Fault(method.upper(), re.compile(path), action, times))

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def take(self, method: str, path: str) -> FaultAction | None:
        with self._lock:
            for fault in self._items:
                if fault.method == method and fault.times > 0 and fault.path.search(path):
                    fault.times -= 1
                    return fault.action
        return None


@dataclass
class SandboxStats:
    requests: dict[str, int] = field(default_factory=dict)  # "PUT /services/..." -> count
    by_method: dict[str, int] = field(default_factory=dict)
    throttled: int = 0  # 429s sent for the concurrency limit (not injected ones)
    max_in_flight: int = 0
    total: int = 0
    first_at: float | None = None  # time.monotonic() of the first request (in the sandbox's process)
    last_at: float | None = None  # ... and of the last answer, so a benchmark can time the busy window

    @property
    def busy_seconds(self) -> float:
        """From the first request's arrival to the last answer: the client's sync phase."""
        return 0.0 if self.first_at is None or self.last_at is None else self.last_at - self.first_at

    def count(self, method: str, path_regex: str = "") -> int:
        return sum(
            n for k, n in self.requests.items() if k.startswith(method.upper() + " ") and re.search(path_regex, k)
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": dict(self.requests),
            "by_method": dict(self.by_method),
            "throttled": self.throttled,
            "max_in_flight": self.max_in_flight,
            "total": self.total,
            "busy_seconds": self.busy_seconds,
        }
