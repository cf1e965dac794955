"""The child side of the harness: run one benchmark callable, write its results as JSON.

``python -m bench.child bench.edge:bench_edge --json-out FILE`` is what the parent runs for
each benchmark, so a crash, a hang or a leaked thread ends with that process. The target is
a ``module:function`` reference (not a registry name), so the parent decides what runs: the
registry's benchmarks, or a test's fakes. An exception goes to stderr as a traceback and
the exit code is 1; the file is written only when the callable returned.

SIGTERM (the parent's budget ran out) raises SystemExit, so ``finally`` blocks stop the
brokers, databases and ingest processes a benchmark started before the parent kills what
is left.
"""

from __future__ import annotations

import argparse
import importlib
import signal
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from bench.result import Result
from bench.write import write_json_atomic

BenchmarkFn = Callable[[], list[Result]]


def load_target(target: str) -> BenchmarkFn:
    """The callable a ``module:function`` reference names."""
    module_name, _, function = target.partition(":")
    if not function:
        raise ValueError(f"benchmark target {target!r} is not module:function")
    run: BenchmarkFn = getattr(importlib.import_module(module_name), function)
    return run


def _exit_on_sigterm(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.child", description=__doc__)
    parser.add_argument("target", help="module:function returning a list of Result")
    parser.add_argument("--json-out", type=Path, required=True)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    results = load_target(args.target)()
    write_json_atomic(args.json_out, {"results": [r.to_json() for r in results]})


if __name__ == "__main__":
    main()
