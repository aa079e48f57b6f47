#!/usr/bin/env python
"""Run every benchmark (bench/bench_*.py) and write bench/results.md.

    python bench/run.py              # everything
    python bench/run.py gallery      # only bench_gallery.py
    python bench/run.py --quick      # smaller inputs, for a smoke run

Each benchmark measures its baseline in the same run and reports the ratio.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from common import Result, machine  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("only", nargs="*", help="Benchmark names (file bench_NAME.py) to run.")
    parser.add_argument("--quick", action="store_true", help="Smaller inputs: a smoke run, not a measurement.")
    parser.add_argument("--output", default=str(HERE / "results.md"))
    args = parser.parse_args()
    names = args.only or sorted(p.stem[len("bench_"):] for p in HERE.glob("bench_*.py"))
    results: list[Result] = []
    failures: list[str] = []
    for name in names:
        print(f"== {name}", flush=True)
        started = time.perf_counter()
        try:
            module = importlib.import_module(f"bench_{name}")
            got = module.run(quick=args.quick)
        except Exception:
            failures.append(f"{name}: {traceback.format_exc()}")
            print(failures[-1], file=sys.stderr)
            continue
        for result in got:
            verdict = "" if result.passed is None else ("PASS" if result.passed else "FAIL")
            print(f"   {result.metric}: {result.value:.4g} {result.unit} vs baseline {result.baseline:.4g} "
                  f"→ ratio {result.ratio:.2f} (target {result.target}) {verdict}")
        results.extend(got)
        print(f"   ({time.perf_counter() - started:.0f}s)")
    write_report(Path(args.output), results, failures, quick=args.quick)
    print(f"wrote {args.output}")
    return 1 if failures else 0


def write_report(path: Path, results: list[Result], failures: list[str], *, quick: bool) -> None:
    info = machine()
    lines = [
        "# Benchmark results",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M UTC}{' (quick mode: smoke run, not a measurement)' if quick else ''}.",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in info.items()),
        "",
        "| benchmark | metric | ours | baseline (same run) | unit | ratio | target | result | notes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        verdict = "—" if r.passed is None else ("pass" if r.passed else "FAIL")
        lines.append(f"| {r.benchmark} | {r.metric} | {r.value:.4g} | {r.baseline:.4g} | {r.unit} | "
                     f"{r.ratio:.2f} | {r.target} | {verdict} | {r.notes} |")
    if failures:
        lines += ["", "## Benchmarks that could not run", ""]
        lines += [f"```\n{f}\n```" for f in failures]
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
