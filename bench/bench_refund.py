"""A refund through the CLI against the raw Stripe SDK call, on the same local Stripe (issue 3).

Three fresh-process commands, alternated run by run, against one sandbox
(localstripe behind kollrefund's fidelity layer, on 127.0.0.1):

- refund:   `kollrefund refund PAY-n --amount 1.00 --yes` (its own payment each run);
- raw SDK:  `python -c "...StripeClient(...).v1.refunds.create(...)"` refunding 1.00 of a
            PaymentIntent made the same way (pm_card_visa, 100.00 USD), with an
            idempotency key and metadata as kollrefund sends; it pays interpreter start-up
            and `import stripe` too;
- start-up: `kollrefund --help`, the CLI's own start-up.

Goal (issue 3): refund - raw SDK <= start-up + 20 ms, i.e. everything kollrefund does
besides the one SDK call -- its start-up, the stale-cache read of the PaymentIntent and
its refunds, the intent and result transactions, the lock -- costs no more than its
start-up plus 20 ms.

    .venv/bin/python bench/bench_refund.py [--quick] [--runs N]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import uuid
from pathlib import Path

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
    ms,
    out_dir,
    print_results,
    run_cmd,
    save_results,
    spread,
    timed_cmd,
)

SLACK = 0.020  # seconds

_RAW_SDK = """
import sys
import stripe
key, base, pi, local_id, idem = sys.argv[1:6]
client = stripe.StripeClient(key, base_addresses={"api": base}, max_network_retries=2)
client.v1.refunds.create(
    {"payment_intent": pi, "amount": 100, "metadata": {"kollrefund_refund_id": local_id}},
    {"idempotency_key": idem},
)
"""


def run(*, quick: bool = False, runs: int | None = None) -> list[Result]:
    sys.path.insert(0, str(ROOT / "src"))
    import stripe

    from kollrefund.sandbox.stripe_sandbox import StripeSandbox

    runs = runs or (2 if quick else 10)
    warmup = 1
    needed = runs + warmup
    work = out_dir("refund")
    cache = work / "cache.db"
    for p in work.iterdir():
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()

    with StripeSandbox() as sb:
        env = clean_env(KOLLREFUND_CACHE__PATH=str(cache), KOLLREFUND_STRIPE__API_KEY=sb.api_key,
                        KOLLREFUND_STRIPE__API_BASE=sb.url)
        log(f"setting up {needed} payments through `kollrefund collect` and {needed} PaymentIntents through the SDK")
        csv_path = work / "invoices.csv"
        csv_path.write_text("id,customer,currency,total\n"
                            + "".join(f"INV-{i},Customer {i},usd,100.00\n" for i in range(1, needed + 1)))
        run_cmd([KOLLREFUND, "import", csv_path], env=env, cwd=work)
        payments: list[str] = []
        for i in range(1, needed + 1):
            out = run_cmd([KOLLREFUND, "collect", f"INV-{i}", "--payment-method", "pm_card_visa", "--yes", "--json"],
                          env=env, cwd=work).stdout
            data = json.loads(out)
            assert data["payment"]["status"] == "paid", data
            payments.append(data["payment"]["id"])
        client = stripe.StripeClient(sb.api_key, base_addresses={"api": sb.url})
        intents = [
            client.v1.payment_intents.create({
                "amount": 10_000, "currency": "usd", "payment_method": "pm_card_visa", "confirm": True,
                "payment_method_types": ["card"], "metadata": {"bench": "raw-sdk"},
            }).id  # type: ignore[typeddict-unknown-key]  # as stripe_gateway sends it
            for _ in range(needed)
        ]
        cli_queue, raw_queue = list(payments), list(intents)

        def cli_refund() -> float:
            return timed_cmd([KOLLREFUND, "refund", cli_queue.pop(0), "--amount", "1.00", "--yes"], env=env,
                             cwd=work)

        def raw_refund() -> float:
            pi = raw_queue.pop(0)
            return timed_cmd([PYTHON, "-c", _RAW_SDK, sb.api_key, sb.url, pi, f"RF-raw-{pi}",
                              f"bench-{uuid.uuid4()}"], env=env, cwd=work)

        def startup() -> float:
            return timed_cmd([KOLLREFUND, "--help"], env=env, cwd=work)

        def status() -> float:
            return timed_cmd([KOLLREFUND, "status", payments[0]], env=env, cwd=work)

        log(f"refund vs raw SDK vs start-up, {runs} runs each, alternated")
        times = alternate({"refund": cli_refund, "raw SDK": raw_refund, "start-up": startup, "status": status},
                          runs=runs, warmup=warmup, progress=log)

        # every refund happened, once, for 1.00
        for pid in payments:
            shown = json.loads(run_cmd([KOLLREFUND, "status", pid, "--json"], env=env, cwd=work).stdout)
            refunds = shown["refunds"]
            assert len(refunds) == 1 and refunds[0]["amount"] == "1.00" and refunds[0]["status"] == "succeeded", shown
        for pi in intents:
            listed = client.v1.refunds.list({"payment_intent": pi}).data
            assert len(listed) == 1 and listed[0].amount == 100, listed

    refund, raw, start, stat = times["refund"], times["raw SDK"], times["start-up"], times["status"]
    overhead = median(refund) - median(raw)
    allowed = median(start) + SLACK
    return [
        Result(
            benchmark="refund - raw SDK refund",
            measured=overhead,
            baseline=allowed,
            baseline_label="start-up + 20 ms",
            ratio=overhead / allowed,
            goal="<= start-up + 20 ms",
            met=overhead <= allowed,
            notes=[
                f"{runs} runs each, alternated; refund median {ms(median(refund))} ({spread(refund)}), "
                f"raw SDK {ms(median(raw))} ({spread(raw)}), start-up (`kollrefund --help`) {ms(median(start))} "
                f"({spread(start)}), `status PAY-n` {ms(median(stat))} ({spread(stat)})",
                f"ratio column: (refund - raw SDK) / (start-up + 20 ms); refund / raw SDK = "
                f"{median(refund) / median(raw):.2f}",
            ],
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 runs each")
    parser.add_argument("--runs", type=int, help="runs of each command (default 10)")
    args = parser.parse_args(argv)
    results = run(quick=args.quick, runs=args.runs)
    print_results(results, title="kollrefund refund: wall time", quick=args.quick)
    save_results("refund", results, quick=args.quick)
    return 0 if all(r.met is not False for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
