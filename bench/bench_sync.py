"""`kollrefund sync` against NetSuite's governance: how close to the bound it gets (issue 4).

N payments (imported from CSV, each on its own invoice) are synced by `kollrefund sync
--yes --json` in a fresh process against the local NetSuite (in this process, on
127.0.0.1) answering every request after L ms and allowing C requests at once (429
CONCURRENCY_LIMIT_EXCEEDED beyond). With R requests served, no client can finish faster
than the bound R x L / C; the ratio is bound / measured, where measured is the sync
phase as NetSuite saw it (first request in to last answer out; the process start-up,
about a second, is reported apart). Two runs:

- at the limit (netsuite.concurrency = C): goals >= 0.9 of the bound, <= 2 requests per record;
- at 4 x the limit (netsuite.concurrency = 4C): goals >= 0.8 of the bound, zero failures
  (every record synced, none duplicated, exit 0) though NetSuite answers 429s.

Backoff is real here (no KOLLREFUND_NO_BACKOFF): this is what cron sees.

    .venv/bin/python bench/bench_sync.py [--quick] [--n 200] [--latency-ms 50] [--limit 5] [--runs 1]

`run(quick=...)` returns rows for bench/run.py; `main(quick=...)` (no argv) returns them
as plain dicts with keys name, measured, baseline, ratio, goal, met.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(_ROOT / "src"))

from _common import KOLLREFUND, Result, clean_env, log, ms, out_dir, print_results, save_results  # noqa: E402

GOAL_AT_LIMIT = 0.9
GOAL_AT_4X = 0.8
MAX_REQUESTS_PER_RECORD = 2.0


@dataclass
class Run:
    concurrency: int
    wall: float  # the whole process, start-up included
    busy: float  # NetSuite's view: first request in to last answer out
    served: int  # requests that did work (not answered 429)
    throttled: int
    max_in_flight: int
    synced: int
    failed: int
    pending: int
    code: int
    duplicates: int

    def bound(self, latency_ms: int, limit: int) -> float:
        return self.served * latency_ms / 1000 / limit


def _one(n: int, latency_ms: int, limit: int, concurrency: int, tag: str) -> Run:
    from kollrefund.sandbox.netsuite_sandbox import NetSuiteSandbox

    work = out_dir("sync", tag)
    shutil.rmtree(work)
    work.mkdir(parents=True)
    with NetSuiteSandbox("1234567_SB1") as ns:
        env = clean_env(
            KOLLREFUND_CACHE__PATH=str(work / "cache.db"),
            KOLLREFUND_OPERATOR__NAME="bench",
            KOLLREFUND_NETSUITE__PAYMENT_ACCOUNT_ID="1",
            KOLLREFUND_NETSUITE__REFUND_ACCOUNT_ID="2",
            KOLLREFUND_NETSUITE__REFUND_PAYMENT_METHOD_ID="3",
            KOLLREFUND_NETSUITE__CONCURRENCY=str(concurrency),
            **ns.env(),
        )
        invoices = ["id,customer,currency,total,netsuite_id,customer_netsuite_id"]
        payments = ["id,invoice_id,amount,currency,psp_reference"]
        for i in range(n):
            nid = ns.add_invoice(external_id=f"INV-{i}", customer_id="4", total=Decimal("100.00"))
            invoices.append(f"INV-{i},Customer {i},usd,100.00,{nid},4")
            payments.append(f"PAY-{i},INV-{i},{'100.00' if i % 2 else '60.00'},usd,pi_bench{i}")
        for name, lines in (("invoices.csv", invoices), ("payments.csv", payments)):
            (work / name).write_text("\n".join(lines) + "\n")
            subprocess.run([str(KOLLREFUND), "import", name], env=env, cwd=work, check=True, capture_output=True)
        ns.set_latency(latency_ms)
        ns.set_concurrency_limit(limit)
        ns.reset_stats()
        start = time.perf_counter()
        proc = subprocess.run([str(KOLLREFUND), "sync", "--yes", "--json"], env=env, cwd=work, capture_output=True,
                              text=True, check=False)
        wall = time.perf_counter() - start
        stats = ns.stats
        report: dict[str, Any] = json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else {}
        eids = [r.get("externalId") for r in ns.records("customerPayment")]
    if proc.returncode not in (0, 7):
        log(f"sync exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return Run(
        concurrency=concurrency, wall=wall, busy=stats.busy_seconds, served=stats.total - stats.throttled,
        throttled=stats.throttled, max_in_flight=stats.max_in_flight, synced=len(report.get("synced", [])),
        failed=len(report.get("failed", {})), pending=len(report.get("pending", {})), code=proc.returncode,
        duplicates=len(eids) - len(set(eids)),
    )


def _median_run(runs: list[Run], latency_ms: int, limit: int) -> Run:
    ratios = [r.bound(latency_ms, limit) / r.busy if r.busy else 0.0 for r in runs]
    return runs[ratios.index(statistics.median_low(ratios))]


def run(*, quick: bool = False, n: int | None = None, latency_ms: int = 50, limit: int = 5,
        runs: int | None = None) -> list[Result]:
    n = n or (50 if quick else 200)
    runs = runs or 1
    results: list[Result] = []
    for label, factor, goal in (("at the limit", 1, GOAL_AT_LIMIT), ("at 4x the limit", 4, GOAL_AT_4X)):
        concurrency = limit * factor
        done = []
        for k in range(runs):
            log(f"sync {n} payments, NetSuite {latency_ms} ms / limit {limit}, concurrency {concurrency} "
                f"(run {k + 1}/{runs})")
            done.append(_one(n, latency_ms, limit, concurrency, f"c{concurrency}"))
            r = done[-1]
            log(f"  sync phase {ms(r.busy)} (process {ms(r.wall)}), {r.served} requests served, {r.throttled} 429s, "
                f"bound {ms(r.bound(latency_ms, limit))}, exit {r.code}")
        r = _median_run(done, latency_ms, limit)
        bound = r.bound(latency_ms, limit)
        ratio = bound / r.busy if r.busy else 0.0
        per_record = r.served / n
        clean = r.code == 0 and r.synced == n and r.failed == 0 and r.pending == 0 and r.duplicates == 0
        if factor == 1:
            met = ratio >= goal and per_record <= MAX_REQUESTS_PER_RECORD and clean
            goal_text = f">= {goal} of bound, <= {MAX_REQUESTS_PER_RECORD:g} req/record"
        else:
            met = ratio >= goal and clean
            goal_text = f">= {goal} of bound, 0 failures"
        results.append(Result(
            benchmark=f"sync {n} records {label} (C={limit}, concurrency {concurrency})",
            measured=r.busy,
            baseline=bound,
            baseline_label="bound (requests x L / C)",
            ratio=ratio,
            goal=goal_text,
            met=met,
            notes=[
                f"{per_record:.2f} requests per record ({r.served} served: a PUT per payment, a GET per invoice; "
                f"{r.throttled} answered 429), at most {r.max_in_flight} in flight at NetSuite; L = {latency_ms} ms",
                f"synced {r.synced}/{n}, failed {r.failed}, pending {r.pending}, duplicates {r.duplicates}, "
                f"exit {r.code}; whole process {ms(r.wall)} (start-up included)",
            ],
        ))
    return results


def main(quick: bool = False) -> list[dict[str, Any]]:
    """The rows as plain dicts: name, measured, baseline, ratio, goal, met (seconds)."""
    return [{"name": r.benchmark, "measured": r.measured, "baseline": r.baseline, "ratio": r.ratio, "goal": r.goal,
             "met": r.met} for r in run(quick=quick)]


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="50 records")
    parser.add_argument("--n", type=int, help="records (default 200)")
    parser.add_argument("--latency-ms", type=int, default=50)
    parser.add_argument("--limit", type=int, default=5, help="NetSuite's concurrency limit C")
    parser.add_argument("--runs", type=int, default=1, help="runs of each configuration (median shown)")
    args = parser.parse_args(argv)
    results = run(quick=args.quick, n=args.n, latency_ms=args.latency_ms, limit=args.limit, runs=args.runs)
    print_results(results, title="kollrefund sync: NetSuite governance bound", quick=args.quick)
    save_results("sync", results, quick=args.quick)
    return 0 if all(r.met is not False for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(cli())
