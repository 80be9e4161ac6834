"""Importing invoices from CSV: `kollrefund import` against `sqlite-utils insert --csv` (issue 2).

Both load the same file into a fresh database, as a fresh process, alternated.
kollrefund validates every row in full (ids, currencies, exact amounts, dates,
duplicates), writes all or nothing in one transaction with its audit row, into
STRICT tables with their indexes; sqlite-utils 4 infers column types and inserts
in batches of 100 (its defaults). Goal: kollrefund <= 1.5 x sqlite-utils' time.

    .venv/bin/python bench/bench_import.py [--quick] [--rows N] [--reps N]

The CSV is generated once per size under bench/out/ and reused.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    KOLLREFUND,
    Result,
    alternate,
    clean_env,
    log,
    median,
    out_dir,
    paired_ratio,
    print_results,
    save_results,
    spread,
    timed_cmd,
    venv_bin,
)

GOAL = 1.5
HEADER = "id,customer,currency,total,netsuite_id,customer_netsuite_id,stripe_customer,issued_on,due_on"
_CURRENCIES = ("usd", "eur", "gbp", "jpy", "kwd", "chf", "sek")


def _total(i: int, cur: str) -> str:
    whole = i % 9973 + 1
    if cur == "jpy":
        return str(whole * 100)
    if cur == "kwd":
        return f"{whole}.{(i % 100) * 10:03d}"
    return f"{whole}.{i % 100:02d}"


def make_csv(rows: int) -> Path:
    """A realistic invoice export of ``rows`` rows: every column, mixed currencies (incl. JPY, KWD)."""
    path = out_dir() / f"invoices-v1-{rows}.csv"
    if path.exists():
        return path
    log(f"writing {path.name} ({rows:,} rows; once)")
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8", newline="") as fh:
        fh.write(HEADER + "\n")
        for i in range(1, rows + 1):
            cur = _CURRENCIES[i % len(_CURRENCIES)]
            c = i % 997
            day = i % 28 + 1
            fh.write(f"INV-{i},Customer {c},{cur},{_total(i, cur)},{1_000_000 + i},{50_000 + c},"
                     f"cus_{c:08d},2026-11-{day:02d},2026-12-{day:02d}\n")
    tmp.rename(path)
    return path


def _fresh(db: Path) -> None:
    for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm"), Path(f"{db}-journal")):
        p.unlink(missing_ok=True)
    lock_dir = db.parent / f"{db.name}.locks"
    if lock_dir.exists():
        for f in lock_dir.iterdir():
            f.unlink()
        lock_dir.rmdir()


def _count(db: Path) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT count(*) FROM invoices").fetchone()[0])
    finally:
        conn.close()


def run(*, quick: bool = False, rows: int | None = None, reps: int | None = None) -> list[Result]:
    rows = rows or (10_000 if quick else 1_000_000)
    # 1M rows take minutes per import on a small machine: one of each keeps the
    # full run near 5 minutes; --reps 3 when there is time.
    reps = reps or (2 if quick or rows < 500_000 else 1)
    csv_path = make_csv(rows)
    work = out_dir("import")
    ours, theirs = work / "kollrefund.db", work / "sqlite-utils.db"
    env = clean_env(KOLLREFUND_CACHE__PATH=str(ours))
    sqlite_utils = venv_bin("sqlite-utils")

    def kollrefund_import() -> float:
        _fresh(ours)
        return timed_cmd([KOLLREFUND, "import", csv_path], env=env, cwd=work)

    def sqlite_utils_insert() -> float:
        _fresh(theirs)
        return timed_cmd([sqlite_utils, "insert", theirs, "invoices", csv_path, "--csv"], env=env, cwd=work)

    log(f"import of {rows:,} invoices: kollrefund vs sqlite-utils, {reps} of each, alternated")
    times = alternate({"kollrefund": kollrefund_import, "sqlite-utils": sqlite_utils_insert}, runs=reps, warmup=0,
                      progress=log)
    for db in (ours, theirs):
        got = _count(db)
        if got != rows:
            raise SystemExit(f"bench: {db.name} holds {got:,} invoices, not {rows:,}")
    a, b = times["kollrefund"], times["sqlite-utils"]
    ratio = paired_ratio(a, b)
    result = Result(
        benchmark=f"import {rows:,} invoices (CSV)",
        measured=median(a),
        baseline=median(b),
        baseline_label="sqlite-utils insert --csv",
        ratio=ratio,
        goal=f"<= {GOAL:.2f}x",
        met=ratio <= GOAL,
        notes=[f"{reps} run(s) each, alternated; kollrefund {spread(a)}, sqlite-utils {spread(b)}; "
               f"{rows / median(a):,.0f} rows/s vs {rows / median(b):,.0f} rows/s; both databases checked to hold "
               f"{rows:,} rows"],
    )
    for db in (ours, theirs):
        _fresh(db)
    return [result]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10,000 rows, 2 runs each")
    parser.add_argument("--rows", type=int, help="rows in the CSV (default 1,000,000)")
    parser.add_argument("--reps", type=int, help="imports of each (default 1 at 1M rows, else 2)")
    args = parser.parse_args(argv)
    results = run(quick=args.quick, rows=args.rows, reps=args.reps)
    print_results(results, title="kollrefund import: speed", quick=args.quick)
    save_results("import", results, quick=args.quick)
    return 0 if all(r.met is not False for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
