"""Benchmark: a no-op nightly (nothing changed since the last one) from trigger to done, real scheduler.

On the stack of benchmarks/orchestration.py (build cache, miniature origin, Airflow's four services,
the LocalExecutor, and the CeleryExecutor in a full run): one nightly of main builds everything (not
measured), then each measured nightly is triggered with the build id of a later minute (``conf``
``build_id``: what a nightly of that minute gets from its clock, without waiting for it): the ``tag``
task finds main's head carrying the last nightly's tag with its outputs in the cache and takes the
nightly shortcut, so every step is skipped and the summary records the skip. Reported: the wall time
from the trigger to the run's end (the REST API polled every second, so up to 1 s late), and where it
went, per task: the time from its upstream's end to its queueing (the scheduler), from queued to
started (the executor starting the task's process), and its run time.

The baseline is a nightly with nothing to do run by hand: the same shortcut's check in a shell,
``git ls-remote`` of the origin and one ``curl --head`` per output the shortcut checks.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import shutil
import subprocess
import tempfile
from pathlib import Path

from .common import Figure, Samples, docker_lock, say, timed
from .orchestration import Stack, _time

GOAL_S = 20.0


def later_nightly_id(minutes: int = 1) -> str:
    """The build id of a nightly ``minutes`` from now (the first build's minute is over by then)."""
    return (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=minutes)).strftime("nightly-%Y%m%d-%H%M")


def breakdown(result: dict, upstream: dict[str, list[str]]) -> dict[str, dict]:
    tis = result["tis"]
    run_start = _time(result["run"]["start_date"])
    rows = {}
    for task_id, ti in sorted(tis.items(), key=lambda kv: kv[1]["start_date"] or "~"):
        if not ti["start_date"]:
            continue
        ends = [_time(tis[u]["end_date"]) for u in upstream.get(task_id, []) if tis[u]["end_date"]]
        ready = max(ends) if ends else run_start
        queued = _time(ti.get("queued_when"))
        start, end = _time(ti["start_date"]), _time(ti["end_date"])
        rows[task_id] = {
            "state": ti["state"],
            "scheduled_after": round((queued - ready).total_seconds(), 2) if queued else None,
            "queued_for": round((start - queued).total_seconds(), 2) if queued else None,
            "ran": round((end - start).total_seconds(), 2),
        }
    return rows


#: Figures measured by benchmarks/orchestration.py on its own stack in this process (one per executor),
#: by smoke flag.
SHARED: dict[bool, list[Figure]] = {}


def measure(stack: Stack, first: dict, runs: int) -> Figure:
    """``runs`` no-op nightlies after ``first`` (the nightly that built everything) on ``stack``."""
    upstream = stack.upstream()
    walls, rows = [], {}
    for n in range(runs):
        say(f"no-op nightly: {stack.executor_name}, run {n + 1}/{runs}")
        result = stack.trigger(conf={"build_id": later_nightly_id(n + 1)})
        if result["tis"]["tag"]["state"] != "skipped":
            state = result["tis"]["tag"]["state"]
            raise RuntimeError(f"the nightly did not take the shortcut: its tag task is {state}")
        walls.append(result["wall"])
        run_span = (_time(result["run"]["end_date"]) - _time(result["run"]["start_date"])).total_seconds()
        rows = {"run_span": round(run_span, 2), "tasks": breakdown(result, upstream)}
    image = stack.servers.xcom(first["run_id"], "amd64.image")
    urls = [artifact["url"] for artifact in image["artifacts"]][:1]
    curl = [str(shutil.which("curl")), "-s", "-o", "/dev/null", "--head"]
    curl += ["--cacert", str(stack.cache.ca_file)]

    def by_hand() -> None:
        subprocess.run(["git", "ls-remote", "--tags", str(stack.origin)], capture_output=True, check=True)
        for url in urls:
            subprocess.run([*curl, url], check=False)

    hand = Samples([timed(by_hand)() for _ in range(3)])
    wall = Samples(walls)
    slowest = sorted(rows["tasks"].items(), key=lambda kv: -(kv[1]["ran"] + (kv[1]["queued_for"] or 0)))[:4]
    where = "; ".join(
        f"{t}: scheduled +{r['scheduled_after']} s, queued {r['queued_for']} s, ran {r['ran']} s"
        for t, r in slowest
    )
    # The LocalExecutor's row keeps the name it had before the CeleryExecutor was measured.
    executor = "" if stack.executor_name == "LocalExecutor" else f"{stack.executor_name}; "
    return Figure(
        benchmark="noop_nightly",
        name=f"no-op nightly of main ({executor}shortcut after {first['tag']['tag']}), trigger to done",
        value=round(wall.median, 2),
        minimum=round(wall.min, 2),
        unit="s",
        runs=len(walls),
        baseline="the shortcut's checks by hand (git ls-remote, curl --head)",
        baseline_value=round(hand.median, 3),
        ratio=round(wall.median / hand.median, 1),
        goal=f"< {GOAL_S:.0f} s",
        met=wall.median < GOAL_S,
        note=where,
        extra={**rows, "executor": stack.executor_name},
    )


def run(smoke: bool = False, runs: int = 3) -> list[Figure]:
    if SHARED.get(smoke):  # measured on the orchestration benchmark's stack, in this process
        return SHARED.pop(smoke)
    runs = 1 if smoke else runs
    with docker_lock(), contextlib.ExitStack() as cleanup:
        work = Path(tempfile.mkdtemp(prefix="flatcar-bench-noop-"))
        stack = Stack(work)
        cleanup.callback(shutil.rmtree, work, ignore_errors=True)
        cleanup.callback(stack.stop)
        stack.prepare()
        stack.start_airflow()
        say("no-op nightly: the nightly that builds everything first")
        return [measure(stack, stack.trigger(), runs)]
