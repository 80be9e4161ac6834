"""Every benchmark in one go, one table: benchmark, measured, baseline, ratio, goal, met?

    .venv/bin/python bench/run.py            # full sizes (about 10 minutes on 2 slow cores, most of it the 1M import)
    .venv/bin/python bench/run.py --quick    # small sizes, few runs (about a minute)
    .venv/bin/python bench/run.py --only status,refund

`make bench` runs the full set. Each bench_*.py also runs alone with its own options.
Results are also written to bench/out/run[-quick].json.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_import
import bench_refund
import bench_status
import bench_sync
from _common import Result, log, ms, print_results, save_results

BENCHES: dict[str, Callable[..., list[Result]]] = {
    "status": bench_status.run,
    "import": bench_import.run,
    "refund": bench_refund.run,
    "sync": bench_sync.run,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes and few runs")
    parser.add_argument("--only", help=f"comma-separated subset of {', '.join(BENCHES)}")
    args = parser.parse_args(argv)
    chosen = args.only.split(",") if args.only else list(BENCHES)
    unknown = [c for c in chosen if c not in BENCHES]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    results: list[Result] = []
    started = time.perf_counter()
    for name in chosen:
        t0 = time.perf_counter()
        log(f"== {name}")
        results += BENCHES[name](quick=args.quick)
        log(f"== {name} took {ms(time.perf_counter() - t0)}")
    print_results(results, title="kollrefund benchmarks", quick=args.quick)
    print(f"total {ms(time.perf_counter() - started)}; results in {save_results('run', results, quick=args.quick)}")
    return 0 if all(r.met is not False for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
