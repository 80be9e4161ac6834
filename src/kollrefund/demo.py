"""``kollrefund demo`` and ``kollrefund sandbox``: the seed story on loopback.

The demo starts the local Stripe and the local NetSuite on free 127.0.0.1 ports,
writes a throw-away config, and walks the help article's eight steps with the
real commands (their own output, as an operator sees it), then shows Stripe's
and NetSuite's views read from the sandboxes' own state. Each claim of the
story is checked; a claim that does not hold makes the demo exit non-zero.
Needs the ``sandbox`` extra (localstripe, GPL) -- never a runtime dependency.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

from rich.rule import Rule
from rich.table import Table
from rich.text import Text

from kollrefund import render
from kollrefund.errors import ConfigError

PAYMENT_ACCOUNT_ID = "1"
REFUND_ACCOUNT_ID = "1"
REFUND_PAYMENT_METHOD_ID = "2"


@contextmanager
def sandboxes() -> Iterator[tuple[Any, Any]]:
    """Both local services, stopped however the block ends."""
    try:
        from kollrefund.sandbox.netsuite_sandbox import NetSuiteSandbox
        from kollrefund.sandbox.stripe_sandbox import StripeSandbox
    except ImportError as exc:
        raise ConfigError(
            f"The local sandbox needs the optional 'sandbox' extra ({exc.name} is missing).",
            hint="Install it with: pip install 'kollrefund[sandbox]' (or run `make demo`).",
        ) from None
    with StripeSandbox() as stripe_sb, NetSuiteSandbox() as ns_sb:
        yield stripe_sb, ns_sb


def sandbox_env(stripe_sb: Any, ns_sb: Any) -> dict[str, str]:
    return {
        **stripe_sb.env(),
        **ns_sb.env(),
        "KOLLREFUND_NETSUITE__PAYMENT_ACCOUNT_ID": PAYMENT_ACCOUNT_ID,
        "KOLLREFUND_NETSUITE__REFUND_ACCOUNT_ID": REFUND_ACCOUNT_ID,
        "KOLLREFUND_NETSUITE__REFUND_PAYMENT_METHOD_ID": REFUND_PAYMENT_METHOD_ID,
    }


def _toml(env: dict[str, str], cache: Path) -> str:
    sections: dict[str, list[str]] = {"cache": [f'path = "{cache}"'], "operator": ['name = "demo"']}
    for key, value in env.items():
        section, _, name = key.removeprefix("KOLLREFUND_").lower().partition("__")
        sections.setdefault(section, []).append(f'{name} = "{value}"')
    return "\n".join(f"[{s}]\n" + "\n".join(lines) + "\n" for s, lines in sections.items())


class Story:
    """Runs commands in-process and checks the article's claims as it goes."""

    def __init__(self, config: Path, run: Callable[[list[str]], int]) -> None:
        self.config = config
        self._run = run
        self.out = render.console()
        self.failures: list[str] = []

    def step(self, title: str) -> None:
        self.out.print()
        if render.plain_output():
            self.out.print(Text(f"{title}\n{'─' * len(title)}"))
        else:
            self.out.print(Rule(Text(title, style="bold"), align="left"))

    def command(self, *args: str) -> None:
        self.out.print(Text(f"$ kollrefund {' '.join(args)}", style="bold cyan"))
        code = self._run(["--config", str(self.config), *args])
        if code != 0:
            self.failures.append(f"`kollrefund {' '.join(args)}` exited {code}")

    def check(self, claim: str, ok: bool) -> None:
        mark = Text("  ✓ " if ok else "  ✗ ", style="green" if ok else "bold red")
        self.out.print(mark + Text(claim))
        if not ok:
            self.failures.append(claim)


def run_demo() -> int:
    from kollrefund.cli import run

    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="kollrefund-demo-") as tmp, sandboxes() as (stripe_sb, ns_sb):
        folder = Path(tmp)
        config = folder / "kollrefund.toml"
        config.write_text(_toml(sandbox_env(stripe_sb, ns_sb), folder / "cache.db"))
        config.chmod(0o600)
        ns_invoice = ns_sb.add_invoice(external_id="INV-9", customer_id="4", total=Decimal("120.00"),
                                       currency="USD", customer_name="Acme")
        invoices = folder / "invoices.csv"
        invoices.write_text(f"id,customer,currency,total,netsuite_id,customer_netsuite_id\n"
                            f"INV-9,Acme,usd,120.00,{ns_invoice},4\n")
        story = Story(config, run)
        query = _Query(config)
        story.out.print(Text("The local Stripe and NetSuite are running on 127.0.0.1; "
                             f"the config is {config}.", style="dim"))

        story.step("0. Invoice INV-9 (120.00 USD) comes from NetSuite into the cache")
        story.command("import", str(invoices))

        story.step("1. The customer pays by card: the invoice is marked Paid")
        story.command("collect", "INV-9", "--payment-method", "pm_card_visa", "--yes")
        story.command("status", "INV-9")
        inv = query.status("INV-9")
        story.check("the invoice balance is zero", inv["invoice"]["balance"] == "0.00")
        story.check("the invoice status is paid", inv["invoice"]["status"] == "paid")
        payment = inv["payments"][0]
        pay_id, pi_id = payment["id"], payment["psp_reference"]

        story.step("2. The payment is marked Paid, with its PSP and PSP reference")
        story.command("payments")
        story.check(f"{pay_id} is applied to INV-9 with PSP Stripe and reference {pi_id}",
                    payment["psp"] == "stripe" and pi_id.startswith("pi_"))
        story.check(f"{pay_id} status is paid", payment["status"] == "paid")

        story.step("3. Stripe shows the payment as Succeeded")
        pi = _stripe_view(story, stripe_sb, pi_id)
        story.check("Stripe's PaymentIntent is succeeded", pi.status == "succeeded")

        story.step("4. NetSuite lists a Payment linked to the invoice, which reads Paid In Full")
        story.command("sync", "--yes")
        ns_view = _netsuite_view(story, ns_sb, ns_invoice)
        story.check("NetSuite's invoice is Paid In Full", ns_view["status"] == "Paid In Full")
        story.check(f"NetSuite lists customerPayment {pay_id} applied to the invoice", pay_id in ns_view["payments"])

        story.step("5. The operator refunds the payment")
        story.command("refund", pay_id, "--reason", "requested_by_customer", "--yes")

        story.step("6. The payment is Refunded; the invoice is Unpaid with its full balance back")
        story.command("status", "INV-9")
        inv = query.status("INV-9")
        after = inv["payments"][0]
        story.check(f"{pay_id} status is refunded", after["status"] == "refunded")
        story.check("the invoice status is unpaid", inv["invoice"]["status"] == "unpaid")
        story.check("the invoice balance is the full 120.00 again", inv["invoice"]["balance"] == "120.00")

        story.step("7. Stripe shows Refunded, and the refund's time matches kollrefund's")
        pi = _stripe_view(story, stripe_sb, pi_id)
        refunds = query.status(pay_id)["refunds"]
        story.check("Stripe's charge is Refunded", bool(pi.latest_charge.refunded))
        from kollrefund.stripe_gateway import stripe_time

        stripe_refunds = pi_refunds(stripe_sb, pi_id)
        story.check(
            f"the refund's Stripe time {stripe_time(stripe_refunds[0].created)} equals {pay_id}'s updated_at "
            f"{after['updated_at']}",
            stripe_time(stripe_refunds[0].created) == after["updated_at"] == refunds[0]["created_at"],
        )

        story.step("8. NetSuite: the invoice is Open with the full amount outstanding; the payment stays listed")
        story.command("sync", "--yes")
        ns_view = _netsuite_view(story, ns_sb, ns_invoice)
        story.check("NetSuite's invoice is Open", ns_view["status"] == "Open")
        story.check("NetSuite shows 120.00 outstanding", ns_view["remaining"] == Decimal("120.00"))
        story.check(f"customerPayment {pay_id} is still in the list", pay_id in ns_view["payments"])
        story.check(f"customerRefund {refunds[0]['id']} is applied to it", refunds[0]["id"] in ns_view["refunds"])

        story.step("The audit trail")
        story.command("log")

    elapsed = time.monotonic() - start
    out = render.console()
    out.print()
    if story.failures:
        out.print(Text(f"The story did not hold ({len(story.failures)} problem(s)):", style="bold red"))
        for failure in story.failures:
            out.print(Text(f"  - {failure}"))
        return 1
    out.print(Text(f"The whole story held, end to end, in {elapsed:.1f} s. Both sandboxes are stopped.",
                   style="bold green"))
    return 0


class _Query:
    """`kollrefund status --json`, read in-process, for the checks."""

    def __init__(self, config: Path) -> None:
        self.config = config

    def status(self, record: str) -> Any:
        import contextlib
        import io
        import json

        from kollrefund.cli import run

        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            code = run(["--config", str(self.config), "status", record, "--json"])
        if code != 0:
            raise RuntimeError(f"status {record} exited {code}")
        return json.loads(buf.getvalue())


def _client(stripe_sb: Any) -> Any:
    import stripe

    return stripe.StripeClient(stripe_sb.api_key, base_addresses={"api": stripe_sb.url})


def pi_refunds(stripe_sb: Any, pi_id: str) -> list[Any]:
    return list(_client(stripe_sb).v1.refunds.list({"payment_intent": pi_id}).data)


def _stripe_view(story: Story, stripe_sb: Any, pi_id: str) -> Any:
    from kollrefund.stripe_gateway import stripe_time

    pi = _client(stripe_sb).v1.payment_intents.retrieve(pi_id, {"expand": ["latest_charge"]})
    charge = pi.latest_charge
    table = Table(title=f"Stripe (read from the local Stripe): {pi_id}", title_justify="left")
    for col in ("Amount", "Status", "Refunded", "Created (UTC)"):
        table.add_column(col)
    shown = "Refunded" if charge.refunded else "Partially refunded" if charge.amount_refunded else "Succeeded"
    table.add_row(f"{Decimal(pi.amount) / 100:.2f} {pi.currency.upper()}", shown,
                  f"{Decimal(charge.amount_refunded) / 100:.2f}", stripe_time(pi.created))
    story.out.print(table)
    refunds = pi_refunds(stripe_sb, pi_id)
    if refunds:
        activity = Table(title="Stripe recent activity: refunds", title_justify="left")
        for col in ("Refund", "Amount", "Status", "Reason", "kollrefund id", "Created (UTC)"):
            activity.add_column(col)
        for r in refunds:
            activity.add_row(r.id, f"{Decimal(r.amount) / 100:.2f}", r.status, str(getattr(r, "reason", None)),
                             str(r.metadata.to_dict().get("kollrefund_refund_id")), stripe_time(r.created))
        story.out.print(activity)
    return pi


def _netsuite_view(story: Story, ns_sb: Any, invoice_id: str) -> dict[str, Any]:
    invoice = ns_sb.get("invoice", invoice_id)
    payments = ns_sb.records("customerPayment")
    refunds = ns_sb.records("customerRefund")
    table = Table(title="NetSuite (read from the local NetSuite): transactions", title_justify="left")
    for col in ("Type", "Internal id", "External id", "Status", "Total", "Amount remaining / applied"):
        table.add_column(col)
    table.add_row("Invoice", invoice["id"], invoice.get("externalId", ""), invoice["status"]["refName"],
                  str(invoice["total"]), str(invoice["amountRemaining"]))
    for p in payments:
        applied = sum(Decimal(str(i.get("amount", 0))) for i in p["apply"]["items"] if i.get("apply"))
        table.add_row("Payment", p["id"], p["externalId"], p["status"]["refName"], str(p["total"]), str(applied))
    for r in refunds:
        table.add_row("Customer Refund", r["id"], r["externalId"], r.get("status", {}).get("refName", ""),
                      str(r.get("total", "")), "")
    story.out.print(table)
    return {
        "status": invoice["status"]["refName"],
        "remaining": Decimal(str(invoice["amountRemaining"])),
        "payments": [p["externalId"] for p in payments],
        "refunds": [r["externalId"] for r in refunds],
    }


def run_sandbox(wait: Callable[[], None]) -> None:
    """Start both sandboxes, print the environment to export, and wait (Ctrl-C stops them)."""
    with sandboxes() as (stripe_sb, ns_sb):
        out = render.console()
        out.print(Text(f"Local Stripe on {stripe_sb.url}, local NetSuite on {ns_sb.url}.", style="bold"))
        out.print(Text("Paste these into another shell, then use kollrefund as usual (Ctrl-C here stops both):"))
        for key, value in sandbox_env(stripe_sb, ns_sb).items():
            out.print(Text(f"export {key}={value}"), soft_wrap=True)
        out.print(Text("Add invoices to the local NetSuite with: "
                       f"curl -X POST {ns_sb.url}/_sandbox/invoices -d "
                       "'{\"external_id\":\"INV-9\",\"customer_id\":\"4\",\"total\":\"120.00\",\"currency\":\"USD\"}'"),
                  soft_wrap=True)
        wait()
