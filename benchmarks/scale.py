"""Benchmark: how parse time, the scheduler and the builds page grow with branches and builds.

* parse: dags/flatcar.py with 1, 10 and 50 release branches (benchmarks/parse.py's measurement: a
  forked child parses the file as the dag-processor does), and its ratio to the same-shaped file of
  EmptyOperators;
* scheduler: the latency from a DagRun's creation (``POST /dagRuns``) to its first task being queued,
  the scheduler's response to a new run, with all the configured DAGs parsed and unpaused, under a
  real scheduler (LocalExecutor, SQLite; the scheduler emits ``scheduler.scheduler_loop_duration``
  only to statsd or OpenTelemetry, neither of which this installation has, so this proxy measures the
  same loop from outside: creating the run, examining it and queueing its first task take one or two
  iterations of the loop over every DAG);
* builds page: ``GET /flatcar/`` server time with 100 and 1,000 builds over 11 branches, and 1,000
  builds over 51 branches (benchmarks/builds_page.py's measurement).
"""

from __future__ import annotations

import datetime as dt
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import yaml

from .common import ROOT, Figure, say
from .parse import BRANCHES, parse_times

DAG_ID = "flatcar_full"


def _figure(measure: str, size: str, value: float, unit: str, **kwargs) -> Figure:
    return Figure(
        benchmark="scale",
        name=f"scale: {measure}, {size}",
        value=value,
        unit=unit,
        extra={"measure": measure, "size": size},
        **kwargs,
    )


def parse_figures(counts: tuple[int, ...], runs: int) -> list[Figure]:
    out = []
    for result in parse_times(counts, runs):
        size = f"{result['branches']} release branches"
        out.append(
            _figure(
                "parse dags/flatcar.py",
                size,
                round(result["real"].median, 3),
                "s",
                minimum=round(result["real"].min, 3),
                runs=runs,
                baseline="EmptyOperator file of the same shape",
                baseline_value=round(result["baseline"].median, 3),
                ratio=round(result["ratio"], 2),
            )
        )
        out.append(_figure("parse ratio to EmptyOperators", size, round(result["ratio"], 2), "×"))  # noqa: RUF001
    return out


def scheduler_latency(branches: int, runs: int, work: Path) -> list[float]:
    """Seconds from a run's creation to its first task's queueing, ``runs`` times, with ``branches``."""
    from airflow_servers import AirflowServers, airflow_env

    home = work / f"airflow-{branches}"
    home.mkdir()
    config = work / f"flatcar-{branches}.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                # Not reachable: the version task fails at once; only the queueing is measured.
                "scripts_repo": str(work / "no-such-origin.git"),
                "full": {"enabled": True, "branch": "main"},
                "os": {"branches": BRANCHES[:branches]},
                "runner": {"type": "local", "root": str(work / "build-root")},
                "retries": 0,
            }
        )
    )
    env = airflow_env(home, config, AIRFLOW__CORE__EXECUTOR="LocalExecutor",
                      AIRFLOW__CORE__PLUGINS_FOLDER=str(ROOT / "plugins"))  # fmt: skip
    servers = AirflowServers(home, env, DAG_ID)
    latencies = []
    try:
        servers.migrate_and_create_pools()
        for name in ("api-server", "scheduler", "dag-processor"):
            servers.start(name)
        servers.wait_healthy()
        servers.wait(lambda: (servers.get("/dags?limit=100") or {}).get("total_entries", 0) >= branches + 1,
                     600, f"{branches + 1} DAGs to be parsed")  # fmt: skip
        for attempt in range(10):  # SQLite: the dag-processor's writes may hold the database a moment
            response = servers.api.patch(
                "/dags", params={"dag_id_pattern": "flatcar%", "limit": 100}, json={"is_paused": False}
            )
            if response.status_code < 500 or attempt == 9:
                break
            time.sleep(2)
        response.raise_for_status()
        time.sleep(5)  # the scheduler sees the unpaused DAGs
        for n in range(runs + 1):
            response = servers.api.post(f"/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": {}})
            response.raise_for_status()
            run = response.json()
            created = dt.datetime.fromisoformat(run["queued_at"].replace("Z", "+00:00"))

            def first_queued(run_id=run["dag_run_id"]):
                tis = servers.get(f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances") or {}
                times = [ti["queued_when"] for ti in tis.get("task_instances", []) if ti.get("queued_when")]
                return min(times) if times else None

            servers.wait(first_queued, 300, f"the first task of run {n} to be queued")
            queued = dt.datetime.fromisoformat(first_queued().replace("Z", "+00:00"))
            if n:  # the first is a warm-up
                latencies.append((queued - created).total_seconds())

            def ended(run_id=run["dag_run_id"]):
                state = (servers.get(f"/dags/{DAG_ID}/dagRuns/{run_id}") or {}).get("state")
                return state in ("success", "failed")

            servers.wait(ended, 300, "the run to end")
    finally:
        servers.stop()
    return latencies


def scheduler_figures(counts: tuple[int, ...], runs: int) -> list[Figure]:
    import sys

    sys.path.insert(0, str(ROOT / "tests"))
    out = []
    work = Path(tempfile.mkdtemp(prefix="flatcar-bench-scale-"))
    try:
        for branches in counts:
            say(f"scale: scheduler with {branches} release branches, {runs} runs")
            latencies = scheduler_latency(branches, runs, work)
            out.append(
                _figure(
                    "scheduler: run created to first task queued",
                    f"{branches} release branches",
                    round(statistics.median(latencies), 2),
                    "s",
                    minimum=round(min(latencies), 2),
                    runs=len(latencies),
                )
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def builds_page_figures(sizes: tuple[tuple[int, int], ...], repeat: int) -> list[Figure]:
    from .builds_page import collect

    out = []
    for builds, branches in sizes:
        say(f"scale: builds page with {builds} builds on {branches} branches")
        report = collect(builds, branches, repeat, 2, phases=(10,))
        row = next(r for r in report["results"]["cache_seconds=10"] if r["url"] == "/flatcar/")
        stats = row["server_ms"] or row["wall_ms"]
        out.append(
            _figure(
                "builds page /flatcar/ server time",
                f"{builds:,} builds, {branches} branches",
                stats["median"],
                "ms",
                minimum=stats["min"],
                runs=stats["n"],
            )
        )
    return out


def run(smoke: bool = False) -> list[Figure]:
    if smoke:
        return parse_figures((1, 3), 1)
    figures = parse_figures((1, 10, 50), 7)
    figures += scheduler_figures((1, 10, 50), 5)
    figures += builds_page_figures(((100, 11), (1000, 11), (1000, 51)), 15)
    return figures
