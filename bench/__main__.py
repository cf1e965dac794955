"""`make bench`: every benchmark in its own process, printed as tables, in bench-results.json.

Each line is a rate measured against a baseline measured in the same run on the same
machine (bare ONNX Runtime, bare broker subscriber), so the ratio is what to compare.

    python -m bench                     # every benchmark, in registry order
    python -m bench --list              # their names, titles and time budgets
    python -m bench --only rollout      # one of them (repeat --only for more)
    python -m bench --json-out FILE     # the results elsewhere than ./bench-results.json

A benchmark that raises, crashes or outruns its budget is a failed line with its reason
(the last lines of its stderr) and the others still run. The file is rewritten after every
benchmark, so even a killed run leaves every finished result.

Exit code: 0 when every benchmark ran to the end, whether or not it met its goals (a missed
goal is a measurement, and the table says so); 1 when one failed or timed out (a benchmark
that measured nothing is a broken benchmark, and `make bench` should say so); 130 when the
harness was interrupted. Every result is written before it exits.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from rich.console import Console

from bench.harness import EXIT_ALL_RAN, exit_code, run_all
from bench.machine import machine_info
from bench.registry import BENCHMARKS, select
from bench.report import Report, results_table, runs_table
from bench.runner import ROOT


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--only", action="append", metavar="NAME", help="run only NAME")
    parser.add_argument("--json-out", type=Path, default=Path("bench-results.json"))
    args = parser.parse_args(argv)
    # Piped (make, CI logs), rich would wrap the tables at 80 columns.
    console = Console(width=None if sys.stdout.isatty() else 160)
    if args.list:
        for b in BENCHMARKS:
            console.print(f"{b.name:<18} {b.budget_s:>5g} s  {b.title}", highlight=False)
        return EXIT_ALL_RAN
    try:
        benchmarks = select(args.only)
    except KeyError as error:
        parser.error(str(error.args[0]))
    # `timeout make bench` or a CI runner ends us with SIGTERM: stop the running benchmark
    # and write what we have, as Ctrl-C does.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    start = time.monotonic()
    report = Report(
        path=args.json_out, machine=machine_info(ROOT), planned=[b.name for b in benchmarks]
    )
    runs = run_all(benchmarks, report, console)
    console.print(runs_table(runs))
    console.print(results_table(runs))
    console.print(
        f"{len(runs)} benchmarks in {time.monotonic() - start:.0f} s; written to {args.json_out}"
    )
    return exit_code(runs)


if __name__ == "__main__":
    sys.exit(main())
