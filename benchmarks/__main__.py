"""Run flatcar-airflow's benchmarks and rewrite the generated part of docs/benchmarks.md.

    .venv/bin/python -m benchmarks                    # all of them (about 15 minutes)
    .venv/bin/python -m benchmarks parse buildcache   # only these (the others' rows are kept)
    .venv/bin/python -m benchmarks orchestration noop_nightly --step-sleeps 0,10 --executor local
    .venv/bin/python -m benchmarks --smoke            # tiny sizes, prints the table, writes no doc
    .venv/bin/python -m benchmarks --list

Each benchmark returns figures: a value (a median of repeats) against a baseline measured in the same
run, their ratio (the median of pairwise ratios where the two ran in turn), the goal and whether it is
met. The results are kept in benchmarks/results.json (one entry per benchmark, with its machine and
date); docs/benchmarks.md gets the table between its markers, the rest of the page is hand-written.
"""

from __future__ import annotations

import argparse
import importlib
import json
import signal
import sys
import time
from pathlib import Path

from .common import ROOT, Figure, machine, say
from .report import render, rewrite_doc

#: name -> (module, what it measures). Each module has ``run(smoke: bool) -> list[Figure]``.
BENCHMARKS = {
    "parse": ("benchmarks.parse", "DAG parse time against a same-shaped file of EmptyOperators"),
    "orchestration": ("benchmarks.orchestration", "overhead per task under a real scheduler"),
    "noop_nightly": ("benchmarks.orchestration_noop", "a no-op nightly from trigger to done"),
    "buildcache": ("benchmarks.buildcache", "existence checks of 200 artifacts"),
    "builds_page": ("benchmarks.builds_page_figures", "the builds page over 1,000 builds"),
    "tagging": ("benchmarks.tagging_figures", "tagging a scripts repository of Flatcar's size"),
    "scale": ("benchmarks.scale", "parse, scheduler and builds page with 1-50 branches"),
    "worktrees": ("benchmarks.worktrees", "a warm step's pooled work tree against a fresh one"),
    "log_streaming": ("benchmarks.log_streaming", "a step printing 1 GB into the task log"),
    "memory": ("benchmarks.memory", "PSS of the quickstart's stack at rest"),
}
RESULTS = ROOT / "benchmarks" / "results.json"
DOC = ROOT / "docs" / "benchmarks.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default all: {', '.join(BENCHMARKS)})")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes; no doc unless --doc is given")
    parser.add_argument("--doc", type=Path, help=f"the page to rewrite (default {DOC.relative_to(ROOT)})")
    parser.add_argument("--results", type=Path, help=f"results file (default {RESULTS.relative_to(ROOT)})")
    parser.add_argument(
        "--step-sleeps",
        default="0,10,60",
        help="orchestration: the step lengths to measure, seconds (default 0,10,60; --smoke: 0)",
    )
    parser.add_argument(
        "--executor",
        default="local,celery",
        help="orchestration (and the no-op nightly measured on its stacks): the executors, local and/or "
        "celery (default local,celery; --smoke: local)",
    )
    parser.add_argument("--list", action="store_true", help="list the benchmarks")
    parser.add_argument(
        "--merge", type=Path, action="append", default=[], help="add the results of another results file"
    )
    parser.add_argument("--render", action="store_true", help="run nothing: rewrite the doc from the results")
    args = parser.parse_args(argv)
    if args.list:
        for name, (_, what) in BENCHMARKS.items():
            print(f"{name:15} {what}")
        return 0
    unknown = [name for name in args.names if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}: choose from {', '.join(BENCHMARKS)}")
    names = [] if args.render else args.names or list(BENCHMARKS)
    # SIGTERM unwinds like Ctrl-C: each benchmark stops the servers it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results_file = args.results or (None if args.smoke else RESULTS)
    doc = args.doc or (None if args.smoke else DOC)

    results = {}
    if results_file is not None and results_file.exists():
        results = json.loads(results_file.read_text())
    for other in args.merge:
        results.update(json.loads(other.read_text()))
    failed = []
    for name in names:
        module = importlib.import_module(BENCHMARKS[name][0])
        say(f"== {name}{' (smoke)' if args.smoke else ''}")
        started = time.monotonic()
        try:
            options = {}
            if name == "orchestration":
                options["sleeps"] = tuple(float(x) for x in args.step_sleeps.split(","))
                options["executors"] = tuple(x.strip() for x in args.executor.split(",") if x.strip())
            figures = [_figure(name, row) for row in module.run(smoke=args.smoke, **options)]
        except Exception as err:  # one benchmark's failure does not lose the others' figures
            say(f"{name} failed: {type(err).__name__}: {err}")
            failed.append(name)
            continue
        if name == "orchestration" and name in results:
            figures += _kept_rows(results[name], figures)
            figures.sort(key=_row_order)
        results[name] = {
            "machine": machine(),
            "smoke": args.smoke,
            "seconds": round(time.monotonic() - started, 1),
            "figures": [figure.as_dict() for figure in figures],
        }
        if results_file is not None:  # kept at once: a later benchmark's crash loses nothing
            results_file.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    if args.render and results_file is not None:
        results_file.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    ordered = {name: results[name] for name in BENCHMARKS if name in results}
    table = render(ordered)
    print(table)
    if doc is not None:
        rewrite_doc(doc, table)
        say(f"rewrote {doc}")
    if failed:
        say(f"failed: {', '.join(failed)}")
        return 1
    return 0


def _row_key(figure: dict) -> tuple:
    """What an orchestration row measured: its executor and step length (Airflow's floor: no length)."""
    extra = figure.get("extra") or {}
    return (extra.get("executor", "LocalExecutor"), extra.get("sleep", "floor"), figure["name"].split(",")[0])


def _row_order(figure: Figure) -> tuple:
    executor, sleep, _ = _row_key(figure.as_dict())
    return (executor != "LocalExecutor", executor, sleep == "floor", sleep if sleep != "floor" else 0)


def _kept_rows(earlier: dict, figures: list[Figure]) -> list[Figure]:
    """The earlier run's orchestration rows of the executors and step lengths this run did not measure
    (``--step-sleeps 60`` keeps the rows of 0 and 10 s), each marked with when it was measured."""
    measured = {_row_key(figure.as_dict()) for figure in figures}
    kept = []
    for old in earlier.get("figures", []):
        if _row_key(old) in measured:
            continue
        when = (old.get("extra") or {}).get("measured") or earlier.get("machine", {})
        extra = {**(old.get("extra") or {}), "measured": {k: when.get(k) for k in ("date", "load")}}
        kept.append(Figure(**{**old, "extra": extra}))
    return kept


def _figure(name: str, row: Figure | dict) -> Figure:
    """A benchmark's row as a :class:`Figure` (benchmarks/worktrees.py and log_streaming.py give plain
    dicts: figure, value, baseline, ratio, goal, unit, so they run on their own without the harness)."""
    if isinstance(row, Figure):
        return row
    return Figure(
        benchmark=name,
        name=row["figure"],
        value=row["value"],
        unit=row["unit"],
        baseline=row.get("baseline_name", "the same run's baseline"),
        baseline_value=row.get("baseline"),
        ratio=row.get("ratio"),
        goal=row.get("goal", ""),
        met=row.get("met"),
        runs=row.get("runs", 0),
    )


if __name__ == "__main__":
    sys.exit(main())
