"""Shared helpers for the benchmarks: timing, alternation, medians, the results table.

Speed is measured here, never asserted in a timed test. Every figure is a ratio of
two things measured side by side in one run, alternated run by run, because these
machines are shared and noisy: a slow minute slows both sides alike.

Only the standard library and rich.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
OUT = BENCH / "out"  # gitignored: built caches, generated files, results


def venv_bin(name: str) -> Path:
    """A program of the project's venv (falls back to the running interpreter's directory)."""
    for base in (ROOT / ".venv" / "bin", Path(sys.executable).parent):
        candidate = base / name
        if candidate.exists():
            return candidate
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"bench: cannot find {name}; run `make bench` (it installs the venv).")
    return Path(found)


PYTHON = venv_bin("python")
KOLLREFUND = venv_bin("kollrefund")


def out_dir(*parts: str) -> Path:
    path = OUT.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def clean_env(**extra: str) -> dict[str, str]:
    """The environment every measured subprocess gets.

    - No KOLLREFUND_* from the caller's shell, so the figures do not depend on it.
    - ``PYTHONDONTWRITEBYTECODE`` dropped: an installed program runs from cached
      bytecode; without the cache every start would recompile the project's own
      modules (but not the libraries', which pip compiled), which is a cost no user
      pays and would bias the comparison against the CLI. Warm-up runs write it.
    - ``NO_COLOR`` so no run pays for colour (output goes to a pipe anyway).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("KOLLREFUND_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("PYTHONSTARTUP", None)
    env["NO_COLOR"] = "1"
    env.update(extra)
    return env


class BenchError(RuntimeError):
    pass


def run_cmd(argv: Sequence[str | os.PathLike[str]], *, env: Mapping[str, str], cwd: Path | None = None,
            check: bool = True) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run([os.fspath(a) for a in argv], env=dict(env), cwd=cwd, capture_output=True,
                          check=False)
    if check and proc.returncode != 0:
        raise BenchError(
            f"{' '.join(os.fspath(a) for a in argv)} exited {proc.returncode}:\n"
            f"{proc.stderr.decode(errors='replace')[-2000:]}"
        )
    return proc


def timed_cmd(argv: Sequence[str | os.PathLike[str]], *, env: Mapping[str, str], cwd: Path | None = None,
              ) -> float:
    """Wall time in seconds of one subprocess, from spawn to exit; it must succeed."""
    args = [os.fspath(a) for a in argv]
    start = time.perf_counter()
    proc = subprocess.run(args, env=dict(env), cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise BenchError(f"{' '.join(args)} exited {proc.returncode}:\n{proc.stderr.decode(errors='replace')[-2000:]}")
    return elapsed


# -- alternation ------------------------------------------------------------------------

# A case is a callable returning its own wall time in seconds (so set-up such as
# deleting a database stays outside the measurement). ``setup`` runs untimed before each.
Case = Callable[[], float]


def alternate(cases: Mapping[str, Case], *, runs: int, warmup: int = 1,
              progress: Callable[[str], None] | None = None) -> dict[str, list[float]]:
    """Run every case ``runs`` times, interleaved run by run; the order flips each round
    (A B, B A, A B, ...) so neither side always runs first after a pause."""
    names = list(cases)
    for _ in range(warmup):
        for name in names:
            cases[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(runs):
        order = names if i % 2 == 0 else list(reversed(names))
        for name in order:
            times[name].append(cases[name]())
        if progress is not None:
            progress(f"round {i + 1}/{runs}: " + ", ".join(f"{n} {ms(times[n][-1])}" for n in names))
    return times


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def paired_ratio(a: Sequence[float], b: Sequence[float]) -> float:
    """Median of the run-by-run ratios a[i]/b[i] (each pair ran back to back)."""
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def spread(values: Sequence[float]) -> str:
    """min..max, for the notes."""
    return f"{ms(min(values))}..{ms(max(values))}"


def ms(seconds: float) -> str:
    if seconds >= 10:
        return f"{seconds:.1f} s"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    return f"{seconds * 1000:.0f} ms"


# -- results ----------------------------------------------------------------------------


@dataclass
class Result:
    """One row of the table.

    ``measured`` and ``baseline`` are seconds. ``ratio`` is measured/baseline (or what the
    goal compares). ``met`` is None when the row has no goal (shown for information).
    """

    benchmark: str
    measured: float
    baseline: float
    baseline_label: str
    ratio: float | None
    goal: str
    met: bool | None
    notes: list[str] = field(default_factory=list)
    measured_label: str | None = None  # shown instead of ms(measured) when set
    baseline_text: str | None = None  # shown instead of the baseline when set
    ratio_label: str | None = None  # shown instead of the ratio when set


def machine() -> dict[str, str]:
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": str(os.cpu_count()),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
    }


def print_results(results: Sequence[Result], *, title: str, quick: bool = False) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, width=None if sys.stdout.isatty() else 150)
    info = machine()
    console.print(f"[bold]{title}[/bold]{' (--quick: small sizes, few runs)' if quick else ''}")
    console.print(f"date {info['date']} | machine {info['platform']} ({info['processor']}), "
                  f"{info['cpus']} CPUs | {info['python']}", markup=False)
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for col, justify in (("benchmark", "left"), ("measured", "right"), ("baseline", "left"), ("ratio", "right"),
                         ("goal", "left"), ("met?", "center")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for r in results:
        ratio = r.ratio_label if r.ratio_label is not None else ("-" if r.ratio is None else f"{r.ratio:.2f}")
        met = "-" if r.met is None else ("[green]yes[/green]" if r.met else "[bold red]NO[/bold red]")
        baseline = r.baseline_text if r.baseline_text is not None else f"{ms(r.baseline)} {r.baseline_label}"
        table.add_row(r.benchmark, r.measured_label or ms(r.measured), baseline,
                      ratio, r.goal, met)
    console.print(table)
    for r in results:
        for note in r.notes:
            console.print(f"  {r.benchmark}: {note}", markup=False)


def save_results(name: str, results: Sequence[Result], *, quick: bool) -> Path:
    path = out_dir() / f"{name}{'-quick' if quick else ''}.json"
    path.write_text(json.dumps({"machine": machine(), "quick": quick, "results": [asdict(r) for r in results]},
                               indent=2) + "\n")
    return path


def log(message: str) -> None:
    print(f"  | {message}", file=sys.stderr, flush=True)
