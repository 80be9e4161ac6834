"""A local Stripe for tests and the demo: localstripe behind our fidelity layer.

    with StripeSandbox() as sb:
        client = stripe.StripeClient(sb.api_key, base_addresses={"api": sb.url})

Each instance runs its own localstripe in a subprocess (localstripe keeps
module-global state) bound to 127.0.0.1 with persistence off, and a fidelity
proxy in a thread of this process that restores real Stripe behaviour
(see ``stripe_fidelity`` and ``_localstripe_main``) and injects faults.

``python -m kollrefund.sandbox.stripe_sandbox`` runs one until Ctrl-C.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from kollrefund.sandbox.stripe_fidelity import Faults, FidelityProxy

DEFAULT_API_KEY = "sk_test_kollrefund_sandbox"
_SRC_DIR = str(Path(__file__).resolve().parents[2])


class SandboxError(RuntimeError):
    """The sandbox could not start or refused a control request."""


class StripeSandbox:
    """localstripe in a subprocess, behind a fidelity proxy on 127.0.0.1."""

    def __init__(self, port: int = 0, api_key: str = DEFAULT_API_KEY,
                 startup_timeout: float = 10.0) -> None:
        self.api_key = api_key
        self._port = port
        self._startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._proxy: FidelityProxy | None = None
        self.upstream_url = ""

    # ---- lifecycle ----------------------------------------------------------
    def start(self) -> StripeSandbox:
        if self._proc is not None:
            return self
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_SRC_DIR, env.get("PYTHONPATH")) if p)
        env.pop("PYTHONSTARTUP", None)
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "kollrefund.sandbox._localstripe_main", "--port", "0"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            env=env, start_new_session=True)
        atexit.register(self.stop)
        try:
            upstream_port = self._read_port()
            self.upstream_url = f"http://127.0.0.1:{upstream_port}"
            self._proxy = FidelityProxy(self.upstream_url, self._port)
            self._proxy.start()
        except BaseException:
            self.stop()
            raise
        return self

    def _read_port(self) -> int:
        assert self._proc is not None and self._proc.stdout is not None
        deadline = time.monotonic() + self._startup_timeout
        fd = self._proc.stdout.fileno()
        buf = b""
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise SandboxError("localstripe did not start in time")
            readable, _, _ = select.select([fd], [], [], left)
            if readable:
                chunk = os.read(fd, 256)
                if not chunk:
                    raise SandboxError(f"localstripe exited at start (code {self._proc.poll()})")
                buf += chunk
        line = buf.split(b"\n", 1)[0].decode()
        if not line.startswith("PORT "):
            raise SandboxError(f"unexpected localstripe output: {line!r}")
        return int(line.split()[1])

    def stop(self) -> None:
        atexit.unregister(self.stop)
        if self._proxy is not None:
            self._proxy.stop()
            self._proxy = None
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=3)
        if proc.stdout is not None:
            proc.stdout.close()

    def __enter__(self) -> StripeSandbox:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # ---- what clients use ---------------------------------------------------
    @property
    def proxy(self) -> FidelityProxy:
        if self._proxy is None:
            raise SandboxError("the sandbox is not running")
        return self._proxy

    @property
    def url(self) -> str:
        """Base address for ``StripeClient(base_addresses={"api": url})``."""
        return self.proxy.url

    @property
    def pid(self) -> int | None:
        """The localstripe subprocess id (None when stopped)."""
        return None if self._proc is None else self._proc.pid

    @property
    def faults(self) -> Faults:
        return self.proxy.faults

    def expire_idempotency_keys(self) -> None:
        """Forget every stored key, as if Stripe's 24-hour window had passed."""
        self.proxy.idempotency.expire()

    def fail_refund(self, refund_id: str, failure_reason: str = "unknown") -> dict[str, Any]:
        """Make a refund fail later, as a card issuer can: status ``failed``."""
        status, body = self.proxy.fail_refund(refund_id, failure_reason)
        data: dict[str, Any] = json.loads(body)
        if status != 200:
            raise SandboxError(data.get("error", {}).get("message", f"HTTP {status}"))
        return data

    def reset(self) -> None:
        """Wipe all Stripe data, stored idempotency keys and faults."""
        self.proxy.reset()

    def env(self) -> dict[str, str]:
        """Environment that points kollrefund at this sandbox."""
        return {"KOLLREFUND_STRIPE__API_KEY": self.api_key,
                "KOLLREFUND_STRIPE__API_BASE": self.url}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kollrefund.sandbox.stripe_sandbox",
        description="Run a local Stripe (localstripe + fidelity layer) on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=0, help="port for the API (default: free)")
    args = parser.parse_args(argv)
    with StripeSandbox(port=args.port) as sb:
        print(f"Stripe sandbox at {sb.url} (key {sb.api_key}); Ctrl-C to stop.", flush=True)
        for name, value in sb.env().items():
            print(f"export {name}={value}", flush=True)
        try:
            while sb.pid is not None:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
