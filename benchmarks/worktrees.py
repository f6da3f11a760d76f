#!/usr/bin/env python3
"""Benchmark: a step's work tree on a warm build host, pooled (moved to the tag) against fresh (not a test).

What it measures, through the real step wrapper (``LocalRunner`` runs ``flatcar-step.sh`` with a step that
does nothing), on a scripts repository of flatcar/scripts' size (13,600 files, ~450,000 objects: the
tagging benchmark's generated origin), the mirror already made (a warm build host):

* ``ready``: from the wrapper's start to its work tree at the tag (the wrapper's "ready after N s" line:
  mirror fetch, then a fresh ``clone --shared`` + full checkout, or the pooled tree moved to the tag);
* ``step``: the whole ``Runner.run`` of the no-op step, which for a fresh tree includes deleting it.

Each run moves between two tags that differ as two nightlies do (20 files changed, 5 added, 5 deleted,
2 mode changes), alternating, so every pooled run really moves its tree. Medians of the repeats, the
fresh baseline measured in the same run.

    .venv/bin/python benchmarks/worktrees.py [--smoke] [--repeat 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import tagging  # the generator of the flatcar/scripts-sized origin

from flatcar_airflow.runners.base import Job
from flatcar_airflow.runners.local import LocalRunner

FULL = {"commits": 36000, "tags": 450, "files": 13600, "seed": 4799}
SMOKE = {"commits": 300, "tags": 10, "files": 200, "seed": 4799}
STEP = "# sourced from the repository root\nfunction noop() { :; }\n"
_READY = re.compile(r"ready after ([0-9.]+) s")


def _git(repo: Path, *args: str, stdin: bytes = b"") -> str:
    return tagging.run_git("--git-dir", str(repo), *args, stdin=stdin)


def _commit(repo: Path, parent: str, changes: dict[str, tuple[str, bytes] | None], message: str) -> str:
    """A commit on ``parent`` with ``changes`` (path: (mode, content), or None to delete), no checkout."""
    index = repo / "bench-index"
    env_index = {"GIT_INDEX_FILE": str(index)}
    tagging.run_git("--git-dir", str(repo), "read-tree", parent, env=env_index)
    lines = []
    for path, change in changes.items():
        if change is None:
            lines.append(f"0 {'0' * 40}\t{path}")
        else:
            mode, content = change
            blob = _git(repo, "hash-object", "-w", "--stdin", stdin=content)
            lines.append(f"{mode} {blob}\t{path}")
    tagging.run_git(
        "--git-dir", str(repo), "update-index", "--index-info", stdin="\n".join(lines).encode() + b"\n",
        env=env_index,
    )  # fmt: skip
    tree = tagging.run_git("--git-dir", str(repo), "write-tree", env=env_index).strip()
    index.unlink()
    return _git(repo, "commit-tree", tree, "-p", parent, "-m", message)


def prepare_origin(params: dict, work: Path, say) -> Path:
    """A copy of the generated origin with tags bench-a and bench-b (a nightly's worth of changes)."""
    source = tagging.synthetic_origin(params["commits"], params["tags"], params["files"], params["seed"], say)
    origin = work / "origin.git"
    subprocess.run(["git", "clone", "-q", "--bare", "--shared", str(source), str(origin)], check=True)
    head = _git(origin, "rev-parse", "refs/heads/main")
    files = _git(origin, "ls-tree", "-r", "--name-only", head).splitlines()
    config = b'BUILDCACHE_SERVER="${BUILDCACHE_SERVER:-bincache}"\nBUILDCACHE_PATH_PREFIX="/srv"\n'
    a = _commit(
        origin,
        head,
        {
            "ci-automation/bench.sh": ("100644", STEP.encode()),
            "ci-automation/ci-config.env": ("100644", config),
        },
        "bench step",
    )
    step = len(files) // 32 or 1
    picked = files[::step]
    changed, deleted, moded = picked[:20], picked[20:25], picked[25:27]
    b_changes: dict[str, tuple[str, bytes] | None] = {}
    b_changes |= {p: ("100644", f"changed {p}\n".encode()) for p in changed}
    b_changes |= {p: None for p in deleted}
    b_changes |= {f"bench/added-{i}.txt": ("100644", f"added {i}\n".encode()) for i in range(5)}
    b_changes |= {p: ("100755", _git(origin, "cat-file", "blob", f"{a}:{p}").encode() + b"\n") for p in moded}
    b = _commit(origin, a, b_changes, "a nightly's changes")
    _git(origin, "update-ref", "refs/heads/main", b)
    _git(origin, "tag", "bench-a", a)
    _git(origin, "tag", "bench-b", b)
    return origin


def _step(runner: LocalRunner, origin: Path, ref: str, key: str) -> tuple[float, float]:
    """(seconds to the work tree ready, seconds of the whole step) of one no-op step."""
    lines: list[str] = []
    job = Job(
        key=key, attempt=1, origin=str(origin), ref=ref, script="ci-automation/bench.sh", function="noop",
        args=[], cache={"server": "cache.example", "user": "builder", "path_prefix": "/srv/cache"},
    )  # fmt: skip
    start = time.perf_counter()
    outcome = runner.run(job, lines.append, lambda: None)
    total = time.perf_counter() - start
    if outcome.rc != 0:
        raise RuntimeError("the benchmark step failed:\n" + "\n".join(lines[-20:]))
    ready = next((float(m.group(1)) for line in lines if (m := _READY.search(line))), float("nan"))
    return ready, total


def measure(origin: Path, work: Path, repeat: int, say) -> dict[str, dict[str, list[float]]]:
    """Fresh and pooled steps interleaved (the machine's noise hits both alike), after a warm-up each."""
    runners = {
        name: LocalRunner(root=str(work / f"root-{name}"), pooled_worktrees=pooled)
        for name, pooled in (("fresh", False), ("pooled", True))
    }
    results: dict[str, dict[str, list[float]]] = {name: {"ready": [], "step": []} for name in runners}
    for name, runner in runners.items():
        _step(runner, origin, "bench-b", f"warmup-{name}")  # the mirror (and the pooled tree) exist after
    for i in range(repeat):
        for name, runner in runners.items():
            ready, total = _step(runner, origin, ("bench-a", "bench-b")[i % 2], f"{name}-{i}")
            results[name]["ready"].append(ready)
            results[name]["step"].append(total)
            say(f"{name} #{i + 1}: ready {ready:.2f} s, step {total:.2f} s")
    return results


def rows(results: dict[str, dict[str, list[float]]]) -> list[dict]:
    def row(figure: str, key: str, goal: str, limit: float | None) -> dict:
        value = statistics.median(results["pooled"][key])
        baseline = statistics.median(results["fresh"][key])
        ratio = round(value / baseline, 3) if baseline else None
        return {
            "figure": figure,
            "value": round(value, 3),
            "baseline": round(baseline, 3),
            "baseline_name": "a fresh work tree (clone --shared, full checkout)",
            "ratio": ratio,
            "goal": goal,
            "met": ratio is not None and ratio <= 0.1 and (limit is None or value < limit),
            "runs": len(results["pooled"][key]),
            "unit": "s",
        }

    return [
        row("warm step's work tree ready, pooled vs fresh (median)", "ready", "< 1 s, ratio <= 0.1", 1.0),
        row("warm no-op step whole (fresh: incl. deleting the tree), median", "step", "ratio <= 0.1", None),
    ]


def run(smoke: bool) -> list[dict]:
    """The benchmark's rows for the harness (``smoke``: a tiny repository, two repeats)."""
    return _run(smoke, repeat=2 if smoke else 5, say=lambda text: print(text, file=sys.stderr, flush=True))[0]


def _run(smoke: bool, repeat: int, say) -> tuple[list[dict], dict]:
    params = SMOKE if smoke else FULL
    work = Path(tempfile.mkdtemp(prefix="bench-worktrees-"))
    try:
        origin = prepare_origin(params, work, say)
        source = Path((origin / "objects/info/alternates").read_text().strip()).parent
        counts = dict(line.split(": ") for line in _git(source, "count-objects", "-v").splitlines())
        objects = {
            "files": len(_git(origin, "ls-tree", "-r", "--name-only", "bench-b").splitlines()),
            "objects": int(counts["in-pack"]) + int(counts["count"]),
        }
        results = measure(origin, work, repeat, say)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows(results), {"parameters": params, "repeat": repeat, "origin": objects, "samples": results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a tiny repository (the suite's smoke run)")
    parser.add_argument("--repeat", type=int, default=5, help="steps per variant (default 5)")
    parser.add_argument("--json", action="store_true", help="print rows and samples as JSON")
    args = parser.parse_args(argv)
    table, details = _run(args.smoke, args.repeat, lambda text: print(text, file=sys.stderr, flush=True))
    if args.json:
        json.dump({"rows": table, **details}, sys.stdout, indent=2)
        print()
    else:
        for entry in table:
            print(
                f"{entry['figure']}: {entry['value']} {entry['unit']} (baseline {entry['baseline']}, "
                f"ratio {entry['ratio']}; goal {entry['goal']})"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
