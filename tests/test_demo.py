"""`kollrefund demo` tells the whole story and holds; `kollrefund sandbox` starts and stops cleanly."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KOLLREFUND_")}
    env.update(HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "cfg"), XDG_DATA_HOME=str(tmp_path / "data"))
    return env


def test_demo_walks_the_seed_story_and_every_claim_holds(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "kollrefund", "demo"], cwd=tmp_path, env=_env(tmp_path),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    for step in range(1, 9):
        assert re.search(rf"^{step}\. ", out, re.M), f"step {step} missing"
    assert "✗" not in out
    assert out.count("✓") == 16  # every claim the demo checks
    assert "The whole story held" in out
    assert not list(tmp_path.glob("**/*.db"))  # the throw-away cache went with its temp dir


def test_sandbox_prints_a_working_environment_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "kollrefund", "sandbox"], cwd=tmp_path, env=_env(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        exports: dict[str, str] = {}
        deadline = time.monotonic() + 30
        assert proc.stdout is not None
        while "KOLLREFUND_NETSUITE__REFUND_PAYMENT_METHOD_ID" not in exports and time.monotonic() < deadline:
            line = proc.stdout.readline()
            m = re.match(r"export (KOLLREFUND_\w+)=(\S+)", line)
            if m:
                exports[m.group(1)] = m.group(2)
        stripe_base = exports["KOLLREFUND_STRIPE__API_BASE"]
        ns_base = exports["KOLLREFUND_NETSUITE__BASE_URL"]
        assert stripe_base.startswith("http://127.0.0.1:") and ns_base.startswith("http://127.0.0.1:")
        # the printed environment works: the CLI, pointed at it, charges a card
        env = {**_env(tmp_path), **exports, "KOLLREFUND_CACHE__PATH": str(tmp_path / "c.db")}
        (tmp_path / "inv.csv").write_text("id,customer,currency,total\nINV-1,Acme,usd,10.00\n")
        for args in (["import", "inv.csv"], ["collect", "INV-1", "--payment-method", "pm_card_visa", "--yes"]):
            run = subprocess.run([sys.executable, "-m", "kollrefund", *args], cwd=tmp_path, env=env,
                                 capture_output=True, text=True, timeout=60)
            assert run.returncode == 0, run.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=30)
    assert code == 0
    assert "Stopped the local Stripe and NetSuite." in (proc.stderr.read() if proc.stderr else "")
    for base in (stripe_base, ns_base):
        try:
            requests.get(base, timeout=1)
            raise AssertionError(f"{base} still answers after Ctrl-C")
        except requests.ConnectionError:
            pass
