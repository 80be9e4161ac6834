"""The fault-injection suite's ledger: every crash point in the code is exercised.

Each step boundary of collect, capture, void, refund and sync is a named point
(``faults.point``, fired by ``KOLLREFUND_CRASH_AT``). test_movements_crash.py and
test_sync_crash.py SIGKILL the CLI at each point, rerun it, and check Stripe,
NetSuite and the cache. This module makes sure no point is left out: a new
``faults.point`` without a crash test fails here. The summary line of the run
reports the count (see conftest.py).
"""

from __future__ import annotations

import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "kollrefund"
_LITERAL = re.compile(r'faults\.point\("([a-z_.]+)"\)')
_SYNC_METHOD = re.compile(r'faults\.point\(f"sync\.(before|after)_\{method\.lower\(\)\}"\)')
# capture and void share one finisher: faults.point(f"{verb}.stripe_answered"), called with verb="capture"/"void"
_VERB_POINT = re.compile(r'faults\.point\(f"\{verb\}\.([a-z_]+)"\)')
_VERB = re.compile(r'verb="([a-z]+)"')
SYNC_METHODS = ("put", "patch")  # the writes sync sends: PUT (upserts) and PATCH (apply lines)


def points_in_code() -> set[str]:
    found: set[str] = set()
    for path in SRC.rglob("*.py"):
        if path.name == "faults.py":
            continue
        text = path.read_text()
        found.update(_LITERAL.findall(text))
        for when in _SYNC_METHOD.findall(text):
            found.update(f"sync.{when}_{m}" for m in SYNC_METHODS)
        for step in _VERB_POINT.findall(text):
            found.update(f"{verb}.{step}" for verb in _VERB.findall(text))
    return found


def points_crashed() -> set[str]:
    from test_movements_crash import CRASHES
    from test_sync_crash import PAYMENT_POINTS, REFUND_POINTS

    return {c[0] for c in CRASHES} | set(PAYMENT_POINTS) | set(REFUND_POINTS)


def test_every_step_boundary_has_a_crash_test() -> None:
    in_code = points_in_code()
    assert len(in_code) >= 18, sorted(in_code)  # the scan itself must find the points
    for kind in ("collect", "capture", "void", "refund"):
        assert {f"{kind}.intent_recorded", f"{kind}.stripe_answered", f"{kind}.local_commit"} <= in_code
    missing = in_code - points_crashed()
    assert not missing, f"crash points with no SIGKILL test: {sorted(missing)}"


def test_no_crash_test_names_a_point_the_code_lacks() -> None:
    stale = points_crashed() - points_in_code()
    assert not stale, f"crash tests aim at points that no longer exist: {sorted(stale)}"
