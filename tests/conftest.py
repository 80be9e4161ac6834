"""Shared fixtures: an isolated environment and an in-process CLI runner."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kollrefund.cli import run
from kollrefund.store import Store


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clean working directory, config dir and environment: no KOLLREFUND_* leaks in."""
    for key in list(os.environ):
        if key.startswith("KOLLREFUND_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / ".config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / ".local/share"))
    monkeypatch.setenv("KOLLREFUND_CACHE__PATH", str(tmp_path / "cache.db"))
    monkeypatch.setenv("KOLLREFUND_OPERATOR__NAME", "tester")
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


class Cli:
    def __init__(self, capsys: pytest.CaptureFixture[str], home: Path) -> None:
        self.capsys = capsys
        self.home = home

    def __call__(self, *args: str) -> Result:
        self.capsys.readouterr()
        code = run(list(args))
        captured = self.capsys.readouterr()
        return Result(code, captured.out, captured.err)

    @property
    def cache(self) -> Path:
        return self.home / "cache.db"

    def snapshot(self) -> dict[str, list[tuple[Any, ...]]]:
        if not self.cache.exists():
            return {}
        with Store.open(self.cache, readonly=True) as store:
            return store.snapshot()

    def write(self, name: str, text: str) -> Path:
        path = self.home / name
        path.write_text(text)
        return path


@pytest.fixture
def cli(home: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[Cli]:
    yield Cli(capsys, home)


INVOICES_CSV = """id,customer,currency,total,netsuite_id,customer_netsuite_id
INV-9,Acme,usd,120.00,104,4
INV-10,Globex,jpy,1500,105,5
INV-11,Initech,kwd,10.250,106,6
"""

PAYMENTS_CSV = """id,invoice_id,amount,currency,psp_reference
PAY-123,INV-9,120.00,usd,pi_123
"""


# -- the local Stripe, shared by the money-movement suites ------------------------------


@pytest.fixture(scope="session")
def stripe_sandbox() -> Iterator[Any]:
    """One local Stripe (localstripe + fidelity layer) for the whole session; see ``stripe_env``."""
    from kollrefund.sandbox.stripe_sandbox import StripeSandbox

    with StripeSandbox() as sb:
        yield sb


@pytest.fixture
def stripe_env(home: Path, stripe_sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A wiped sandbox (data, idempotency keys, faults) and kollrefund pointed at it."""
    stripe_sandbox.reset()
    for name, value in stripe_sandbox.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("KOLLREFUND_STRIPE__MAX_NETWORK_RETRIES", "2")
    yield stripe_sandbox
    stripe_sandbox.faults.clear()


@pytest.fixture
def stripe_client(stripe_env: Any) -> Any:
    """The official SDK on the sandbox, to read (or act on) Stripe directly."""
    import stripe

    return stripe.StripeClient(stripe_env.api_key, base_addresses={"api": stripe_env.url},
                               http_client=stripe.RequestsClient(timeout=10), max_network_retries=0)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say how many crash points the fault-injection suite covered (issue 6)."""
    try:
        from test_fault_points import points_crashed, points_in_code
    except ImportError:
        return
    crash_reports = [
        r for r in terminalreporter.stats.get("passed", []) + terminalreporter.stats.get("failed", [])
        if "_crash.py::" in r.nodeid and r.when == "call"
    ]
    if not crash_reports:
        return
    failed = sum(1 for r in crash_reports if r.failed)
    covered = points_in_code() & points_crashed()
    terminalreporter.write_line(
        f"fault injection: {len(covered)} of {len(points_in_code())} crash points covered by "
        f"{len(crash_reports)} SIGKILL tests, {failed} failed"
    )
