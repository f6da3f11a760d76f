#!/usr/bin/env python3
"""Benchmark: a step printing a lot, streamed into the task log, against the same step writing a file.

A step (awk printing numbered 110-byte lines, as a compile log looks) runs through the real wrapper and
``LocalRunner`` (a warm pooled work tree), its output handed to the step operator's
:class:`~flatcar_airflow.operators.step_log.StepLog`, whose records go through Airflow's task logging
(``airflow.sdk.log.configure_logging``, structlog, JSON lines) into a log file. Baseline: the same step
with its output redirected to a file in the work tree (the wrapper's own few lines still logged).
Variants, each in its own Python process (so its peak RSS, ``ru_maxrss``, is its own):

* ``stream``: the task process's side as in a real task (``sending_to_supervisor``: no masking there);
* ``stream-masked``: the whole log path in one process, Airflow's secret masking included (in a real task
  the supervisor, a second process, masks and writes; its regex is the pipeline's narrowest part);
* ``per-line``: the way before batching, one logging call per line (on a smaller size).

The masker's own throughput on this machine is measured too (the patterns a task has: the sensitive
configuration values Airflow registers).

    .venv/bin/python benchmarks/log_streaming.py [--smoke] [--size-mb 1024] [--repeat 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

STEP = r"""# sourced from the repository root
function lines() {
    awk -v n="$(($1 / 110))" 'BEGIN {
        pad = sprintf("%0100d", 0); gsub(/0/, "x", pad)
        for (i = 1; i <= n; i++) printf "%08d %s\n", i, pad
    }'
}
function flood() {
    if [[ $2 == - ]]; then lines "$1"; else lines "$1" >"$2"; fi
    echo "flood done"
}
"""
GIT_ENV = {"GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@example.org", "GIT_COMMITTER_NAME": "b",
           "GIT_COMMITTER_EMAIL": "b@example.org", "GIT_CONFIG_NOSYSTEM": "1"}  # fmt: skip


def _origin(work: Path) -> Path:
    """A tiny scripts-like origin with the flood step, tagged bench-log."""
    src, origin = work / "src", work / "origin.git"
    env = {**os.environ, **GIT_ENV}
    (src / "ci-automation").mkdir(parents=True)
    (src / "ci-automation/flood.sh").write_text(STEP)
    for args in (
        ["init", "-q", "-b", "main"],
        ["add", "-A"],
        ["commit", "-qm", "flood"],
        ["tag", "bench-log"],
    ):
        subprocess.run(["git", *args], cwd=src, env=env, check=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(src), str(origin)], env=env, check=True)
    return origin


def _variant(origin: str, root: str, size: int, mode: str, log_path: str) -> dict:
    """One step in this process: ``file``, ``stream``, ``stream-masked`` or ``per-line`` (the docstring)."""
    import structlog
    from airflow.sdk.log import configure_logging

    from flatcar_airflow.operators.step_log import StepLog
    from flatcar_airflow.runners.base import Job
    from flatcar_airflow.runners.local import LocalRunner

    log_file = open(log_path, "wb")  # noqa: SIM115 - open for the whole run
    configure_logging(json_output=True, output=log_file, sending_to_supervisor=mode != "stream-masked")
    log = structlog.get_logger("airflow.task.operators.flatcar_airflow.operators.step.FlatcarStepOperator")
    target = "-" if mode != "file" else "flood.out"

    def per_line(block: str) -> None:
        for line in block.split("\n"):
            log.info("%s", line)

    steplog = StepLog(lambda text: log.info("%s", text))
    on_output, on_tick = (per_line, lambda: None) if mode == "per-line" else (steplog.write, steplog.tick)
    runner = LocalRunner(root=root)
    job = Job(key=f"log-{mode}", attempt=1, origin=origin, ref="bench-log", script="ci-automation/flood.sh",
              function="flood", args=[str(size), target])  # fmt: skip
    start = time.perf_counter()
    outcome = runner.run(job, on_output, on_tick)
    steplog.flush()
    seconds = time.perf_counter() - start
    log_file.close()
    if outcome.rc != 0:
        raise RuntimeError(f"the flood step failed (exit {outcome.rc})")
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "seconds": seconds,
        "cpu_s": own.ru_utime + own.ru_stime,  # this process: reading, batching, logging
        "step_cpu_s": children.ru_utime + children.ru_stime,  # the wrapper and the step (awk)
        "peak_rss_mb": own.ru_maxrss / 1024,
        "log_mb": os.path.getsize(log_path) / 2**20,
        "lines_seen": steplog.lines,
    }


def _measure(origin: Path, root: Path, size: int, mode: str, work: Path) -> dict:
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); import log_streaming as b; a = sys.argv; "
        "print(json.dumps(b._variant(a[2], a[3], int(a[4]), a[5], a[6])))"
    )
    log_path = work / f"task-{mode}.log"
    bench_dir = str(Path(__file__).resolve().parent)
    argv = [sys.executable, "-c", code, bench_dir, str(origin), str(root), str(size), mode, str(log_path)]
    out = subprocess.run(argv, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{mode} run failed:\n{out.stderr[-3000:]}")
    log_path.unlink(missing_ok=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _run(smoke: bool, size_mb: int, repeat: int, say) -> tuple[list[dict], dict]:
    size = (4 if smoke else size_mb) << 20
    old_size = (2 if smoke else min(size_mb, 100)) << 20
    work = Path(tempfile.mkdtemp(prefix="bench-log-"))
    samples: dict[str, list[dict]] = {"file": [], "stream": [], "stream-masked": []}
    try:
        origin = _origin(work)
        root = work / "root"
        _measure(origin, root, 1 << 20, "file", work)  # warm: the mirror and the pooled tree exist
        for i in range(repeat):
            for mode in ("file", "stream", "stream-masked") if i == 0 else ("file", "stream"):
                sample = _measure(origin, root, size, mode, work)
                samples[mode].append(sample)
                say(f"{mode} #{i + 1}: {sample}")
        for mode, name in (("file", "file-small"), ("per-line", "per-line")):
            samples[name] = [_measure(origin, root, old_size, mode, work)]
            say(f"{mode} ({old_size >> 20} MB): {samples[name][0]}")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def med(mode: str, key: str) -> float:
        return statistics.median(s[key] for s in samples[mode])

    def row(figure: str, value: float, baseline: float, goal: str, unit: str) -> dict:
        ratio = round(value / baseline, 3) if baseline else None
        return {"figure": figure, "value": round(value, 3), "ratio": ratio, "goal": goal, "unit": unit,
                "baseline": round(baseline, 3) if baseline else None, "runs": repeat if baseline else 1,
                "baseline_name": "the same step writing to a file" if baseline else ""}  # fmt: skip

    mb = size >> 20
    first = row(f"step printing {mb} MB into the task log vs to a file (median; ratio: of the pairs)",
                med("stream", "seconds"), med("file", "seconds"), "ratio < 1.10", "s")  # fmt: skip
    # Each stream run follows its file run: the median of the pairs' ratios resists the machine's swings.
    pairs = [s["seconds"] / f["seconds"] for f, s in zip(samples["file"], samples["stream"], strict=True)]
    first["ratio"] = round(statistics.median(pairs), 3)
    first["met"] = first["ratio"] < 1.10
    rows = [
        first,
        row(f"peak RSS, step printing {mb} MB into the task log vs to a file", med("stream", "peak_rss_mb"),
            med("file", "peak_rss_mb"), "flat (ratio ~1)", "MB"),
        row(f"CPU of the task process, {mb} MB into the task log vs to a file (the step's own: "
            f"{med('file', 'step_cpu_s'):.1f} s)", med("stream", "cpu_s"), med("file", "cpu_s"), "(cost)",
            "s"),
        row(f"the same, the supervisor's masking included (one process), {mb} MB",
            med("stream-masked", "seconds"), med("file", "seconds"), "(the floor: masking)", "s"),
        row(f"before batching: one logging call per line, {old_size >> 20} MB vs to a file",
            med("per-line", "seconds"), med("file-small", "seconds"), "(for comparison)", "s"),
        row("Airflow's secret masker alone, 1 MiB records", _masker_mb_per_s(), 0, "(throughput)", "MB/s"),
    ]  # fmt: skip
    return rows, {"size_bytes": size, "repeat": repeat, "samples": samples}


def _masker_mb_per_s() -> float:
    """MB/s of Airflow's ``redact`` on 1 MiB log messages, with the patterns of a task's configuration."""
    code = (
        "import io, time; from airflow.sdk.log import configure_logging; "
        "configure_logging(json_output=True, output=io.BytesIO()); "
        "from airflow.sdk._shared.secrets_masker import redact; "
        "text = ('%08d ' % 1 + 'x' * 100 + '\\n') * 9532; start = time.perf_counter(); "
        "[redact({'event': text}) for _ in range(20)]; "
        "print(20 * len(text) / 2**20 / (time.perf_counter() - start))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def run(smoke: bool) -> list[dict]:
    """The benchmark's rows for the harness (``smoke``: 4 MB, one repeat)."""
    say = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    return _run(smoke, 1024, 1 if smoke else 3, say)[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="4 MB (the suite's smoke run)")
    parser.add_argument("--size-mb", type=int, default=1024, help="output of the step (default 1024)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per variant (default 3)")
    parser.add_argument("--json", action="store_true", help="print rows and samples as JSON")
    args = parser.parse_args(argv)
    say = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    table, details = _run(args.smoke, args.size_mb, 1 if args.smoke else args.repeat, say)
    if args.json:
        json.dump({"rows": table, **details}, sys.stdout, indent=2)
        print()
    else:
        for entry in table:
            print(f"{entry['figure']}: {entry['value']} {entry['unit']} (baseline {entry['baseline']}, "
                  f"ratio {entry['ratio']}; goal {entry['goal']})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
