"""Cold start of `kollrefund status INV-9` against the import floor (issue 2).

The floor is `python -c "import typer, rich, sqlite_utils, pydantic_settings"` in the
same venv: what any CLI on these libraries pays before doing anything. Goal: the
status command takes at most 1.1 x the floor, on a cache of 1,000 and of 1,000,000
invoices. Each run is a fresh process; the two commands alternate run by run.

Also: `kollrefund invoices` on the 1,000-invoice cache (no goal, for information),
and a check that read-only commands import neither `stripe` nor `requests`.

    .venv/bin/python bench/bench_status.py [--quick] [--runs N] [--sizes 1000,1000000]

The caches are built once under bench/out/ (straight through kollrefund.store.Store,
one transaction) and reused while they are valid.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    KOLLREFUND,
    PYTHON,
    ROOT,
    Result,
    alternate,
    clean_env,
    log,
    median,
    out_dir,
    paired_ratio,
    print_results,
    run_cmd,
    save_results,
    spread,
    timed_cmd,
)

FLOOR = [str(PYTHON), "-c", "import typer, rich, sqlite_utils, pydantic_settings"]
GOAL = 1.1
FORBIDDEN = ("stripe", "requests")  # SPEC/issue 2: read-only commands import neither
ALSO_WATCHED = ("aiohttp", "httpx", "urllib3", "requests_oauthlib", "jwt", "cryptography", "filelock")
CURRENCIES = ("usd", "eur", "gbp", "jpy", "kwd")


# -- the caches ---------------------------------------------------------------------------


def _invoice_rows(n: int, ts: str) -> Iterator[tuple[Any, ...]]:
    for i in range(1, n + 1):
        if i == 9:
            continue  # INV-9 is the seed's invoice, added with its payment below
        cur = CURRENCIES[i % len(CURRENCIES)]
        total = (i % 9973 + 1) * (10 if cur == "kwd" else 1) * 100
        ns = str(100_000 + i) if i % 2 else None
        yield (f"INV-{i}", f"Customer {i % 997}", cur, total, total, "unpaid", ns, None, None,
               "2026-11-01", "2026-12-01", ts, ts)


def _cache_ok(path: Path, n: int) -> bool:
    """The cache is there, of the current schema, and holds exactly the expected data."""
    if not path.exists():
        return False
    sys.path.insert(0, str(ROOT / "src"))
    try:
        from kollrefund.schema import migrations
        from kollrefund.store import Store

        with Store.open(path, readonly=True) as store:
            if migrations.pending(store.db):
                return False
            count = store.conn.execute("SELECT count(*) FROM invoices").fetchone()[0]
            pays = store.conn.execute("SELECT count(*) FROM payments WHERE invoice_id = 'INV-9'").fetchone()[0]
            return bool(count == n and pays == 1)
    except Exception:
        return False


def build_cache(n: int) -> Path:
    """A cache of ``n`` invoices; INV-9 is the seed's (120.00 USD, paid by card, 20.00 refunded)."""
    path = out_dir() / f"status-{n}.db"
    if _cache_ok(path, n):
        return path
    log(f"building a cache of {n:,} invoices at {path.relative_to(ROOT)} (once; reused while valid)")
    sys.path.insert(0, str(ROOT / "src"))
    from kollrefund import domain as d
    from kollrefund.money import Money
    from kollrefund.store import Store

    tmp = path.with_suffix(".building")
    for stale in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm"), path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        stale.unlink(missing_ok=True)
    at = datetime(2026, 11, 25, 20, 41, 7, tzinfo=UTC)
    ts = d.iso(at)
    with Store.open(tmp) as store:
        store.conn.execute("PRAGMA synchronous = OFF")  # a throwaway build; the product's own writes stay FULL
        with store.transaction():
            store.insert_invoices(_invoice_rows(n, ts))
            inv = d.new_invoice(id="INV-9", customer="Acme", total=Money(12000, "usd"))
            store.insert_invoices([(inv.id, inv.customer, "usd", 12000, 12000, "unpaid", "104", None, None,
                                    None, None, ts, ts)])
            p = d.capture(d.new_payment(id="PAY-123", invoice_id="INV-9", amount=Money(12000, "usd"),
                                        psp_reference="pi_bench123", at=at), at=at)
            store.insert_payment(p, ns_sync="synced")
            refund = d.new_refund(id="RF-1", payment=p, amount=Money(2000, "usd"), reason=None, at=at)
            store.insert_refund(refund)
            p = d.refund(p, Money(2000, "usd"), at=at)
            store.save_payment(p)
            store.save_invoice(d.settle_invoice(store.get_invoice("INV-9"), [p]))
        store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    tmp.rename(path)
    Path(f"{tmp}-wal").unlink(missing_ok=True)
    Path(f"{tmp}-shm").unlink(missing_ok=True)
    if not _cache_ok(path, n):
        raise SystemExit(f"bench: the cache built at {path} does not check out")
    return path


# -- the import check -------------------------------------------------------------------------

_PROBE = """
import json, sys
from kollrefund.cli import run
code = run(sys.argv[1:])
sys.stdout.flush()
sys.stderr.write("\\nMODULES " + json.dumps(sorted(sys.modules)) + "\\n")
sys.exit(code)
"""


def imported_modules(args: list[str], env: dict[str, str]) -> set[str]:
    """Top-level packages a command imports, run in-process in a fresh interpreter."""
    proc = run_cmd([PYTHON, "-c", _PROBE, *args], env=env)
    line = next(x for x in proc.stderr.decode().splitlines() if x.startswith("MODULES "))
    return {m.split(".")[0] for m in json.loads(line[len("MODULES "):])}


def import_check(env: dict[str, str]) -> Result:
    bad: dict[str, list[str]] = {}
    watched: dict[str, list[str]] = {}
    commands = (["status", "INV-9"], ["status", "PAY-123"], ["invoices"], ["payments"], ["status", "INV-9", "--json"])
    for args in commands:
        mods = imported_modules(args, env)
        for m in FORBIDDEN:
            if m in mods:
                bad.setdefault(m, []).append(" ".join(args))
        for m in ALSO_WATCHED:
            if m in mods:
                watched.setdefault(m, []).append(" ".join(args))
    notes = [f"checked: {', '.join(' '.join(c) for c in commands)}"]
    if bad:
        notes += [f"{m} imported by: {', '.join(cmds)}" for m, cmds in bad.items()]
    if watched:
        notes.append("also imported: " + "; ".join(f"{m} by {', '.join(c)}" for m, c in watched.items()))
    return Result(
        benchmark="read-only commands import stripe/requests",
        measured=0.0,
        baseline=0.0,
        baseline_label="",
        ratio=None,
        goal="neither",
        met=not bad,
        notes=notes,
        measured_label="none" if not bad else ", ".join(sorted(bad)),
        baseline_text="-",
        ratio_label="-",
    )


# -- the benchmark ------------------------------------------------------------------------------


def _startup_rows(label: str, cli: list[float], floor: list[float], goal: float | None) -> Result:
    ratio = paired_ratio(cli, floor)
    return Result(
        benchmark=label,
        measured=median(cli),
        baseline=median(floor),
        baseline_label="import floor",
        ratio=ratio,
        goal=f"<= {goal:.2f}x" if goal is not None else "- (info)",
        met=None if goal is None else ratio <= goal,
        notes=[f"{len(cli)} runs each, alternated; cli {spread(cli)}, floor {spread(floor)}; "
               f"ratio of medians {median(cli) / median(floor):.3f}, median of paired ratios {ratio:.3f}"],
    )


def run(*, quick: bool = False, runs: int | None = None, sizes: list[int] | None = None) -> list[Result]:
    sizes = sizes or ([1_000, 100_000] if quick else [1_000, 1_000_000])
    runs = runs or (3 if quick else 15)
    workdir = out_dir("status-cwd")  # no kollrefund.toml here, so no config file is read
    results: list[Result] = []
    for n in sizes:
        cache = build_cache(n)
        env = clean_env(KOLLREFUND_CACHE__PATH=str(cache))
        # the command must work (and show the seed's invoice) before it is timed
        shown = json.loads(run_cmd([KOLLREFUND, "status", "INV-9", "--json"], env=env, cwd=workdir).stdout)
        assert shown["invoice"]["balance"] == "20.00", shown
        log(f"status INV-9 on {n:,} invoices vs the import floor, {runs} runs each")
        times = alternate(
            {
                "cli": partial(timed_cmd, [KOLLREFUND, "status", "INV-9"], env=env, cwd=workdir),
                "floor": partial(timed_cmd, FLOOR, env=env, cwd=workdir),
            },
            runs=runs,
            warmup=2,
            progress=log,
        )
        results.append(_startup_rows(f"status INV-9, {n:,} invoices", times["cli"], times["floor"], GOAL))
        if n == 1_000:
            log("invoices (all 1,000) vs the import floor")
            times = alternate(
                {
                    "cli": partial(timed_cmd, [KOLLREFUND, "invoices"], env=env, cwd=workdir),
                    "floor": partial(timed_cmd, FLOOR, env=env, cwd=workdir),
                },
                runs=max(3, runs // 3),
                warmup=1,
                progress=log,
            )
            results.append(_startup_rows("invoices (1,000 listed)", times["cli"], times["floor"], None))
            results.append(import_check(env))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="caches of 1,000 and 100,000; 3 runs")
    parser.add_argument("--runs", type=int, help="runs of each command per size")
    parser.add_argument("--sizes", help="comma-separated cache sizes, e.g. 1000,1000000")
    args = parser.parse_args(argv)
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",")] if args.sizes else None
    results = run(quick=args.quick, runs=args.runs, sizes=sizes)
    print_results(results, title="kollrefund status: cold start", quick=args.quick)
    save_results("status", results, quick=args.quick)
    return 0 if all(r.met is not False for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
