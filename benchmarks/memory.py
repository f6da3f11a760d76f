"""Benchmark: the memory of the quickstart's stack at rest (PSS), against Airflow's own services at rest.

INPUTS:  this checkout's venv; a free loopback address with port 443 (the quickstart's build cache).
OUTPUTS: one figure: the proportional set size (PSS, shared pages split between their users, so the
         processes' values add up to what the stack really takes) of every process of
         ``flatcar-airflow quickstart --no-demo-build`` (its supervisor, Airflow's api-server,
         scheduler, dag-processor and triggerer with the pipelines, the build cache's nginx and sshd)
         once it is up and idle, against the same four Airflow services started the same way with an
         empty DAG folder and no build cache (Airflow at rest; flatcar-airflow's plugin still loads
         through its entry point). The components' own PSS is kept in the figure's extra.

Idle means: the quickstart printed its banner (its DAGs are parsed), then ``SETTLE`` seconds passed (the
dag-processor re-parses, the scheduler loops); the PSS is the median of ``SAMPLES`` samples a few
seconds apart. The stack is then stopped as a user stops it (SIGTERM, the quickstart's Ctrl-C).
"""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .common import ROOT, Figure, free_port, say

VENV_BIN = Path(sys.executable).parent
#: seconds idle before sampling, samples, seconds between samples
SETTLE, SAMPLES, EVERY = 30.0, 5, 3.0
SMOKE_SETTLE, SMOKE_SAMPLES = 3.0, 1
AIRFLOW_SERVICES = ("api-server", "scheduler", "dag-processor", "triggerer")
#: the breakdown's kinds of process: (kind, what its command line or process title contains), first match
KINDS = (
    ("api-server", ("api_server", "api-server")),
    ("LocalExecutor workers", ("LocalExecutor",)),
    ("log servers", ("serve-logs", "serve_logs")),
    ("scheduler", ("scheduler",)),
    ("dag-processor", ("dag-processor", "dag_processor")),
    ("triggerer", ("triggerer",)),
    ("build cache: nginx", ("nginx",)),
    ("build cache: sshd", ("sshd",)),
    ("quickstart supervisor", ("quickstart",)),
)


def _kind(cmdline: list[str]) -> str:
    text = " ".join(cmdline)
    for kind, marks in KINDS:
        if any(mark in text for mark in marks):
            return kind
    return Path(cmdline[0]).name if cmdline else "?"


def stack_pss(roots: list[int]) -> dict[str, float]:
    """MB of PSS per kind of process, of ``roots``, their descendants and whatever shares their sessions
    (a daemon that left the tree)."""
    import psutil

    sessions = set()
    for pid in roots:
        with contextlib.suppress(OSError):
            sessions.add(os.getsid(pid))
    procs: dict[int, psutil.Process] = {}
    for pid in roots:
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(pid)
            procs[pid] = root
            procs.update({child.pid: child for child in root.children(recursive=True)})
    for proc in psutil.process_iter():
        with contextlib.suppress(OSError, psutil.Error):
            if os.getsid(proc.pid) in sessions:
                procs.setdefault(proc.pid, proc)
    kinds: dict[str, float] = {}
    for proc in procs.values():
        with contextlib.suppress(psutil.Error):
            kind = _kind(proc.cmdline())
            kinds[kind] = kinds.get(kind, 0.0) + proc.memory_full_info().pss / 2**20
    return kinds


def _sample(roots: list[int], settle: float, samples: int) -> dict:
    time.sleep(settle)
    taken = []
    for n in range(samples):
        if n:
            time.sleep(EVERY)
        taken.append(stack_pss(roots))
    totals = [sum(s.values()) for s in taken]
    middle = taken[totals.index(sorted(totals)[len(totals) // 2])]
    return {"total": statistics.median(totals), "min": min(totals), "kinds": middle, "samples": totals}


def _wait_for(path: Path, text: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in path.read_text(errors="replace"):
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:3]} exited ({proc.returncode}):\n{path.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {text!r} in {path}:\n{path.read_text()[-3000:]}")
        time.sleep(1)


def _stop(procs: list[subprocess.Popen], grace: float = 90) -> None:
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def measure_quickstart(work: Path, settle: float, samples: int) -> dict:
    """The quickstart, demo profile without its build, up and idle."""
    log = work / "quickstart.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    cmd = [
        str(VENV_BIN / "flatcar-airflow"), "quickstart", "--home", str(work / "home"),
        "--port", str(free_port()), "--no-demo-build",
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
    try:
        _wait_for(log, "flatcar-airflow is running.", proc, 600)
        return _sample([proc.pid], settle, samples)
    finally:
        _stop([proc])


def measure_airflow(work: Path, settle: float, samples: int) -> dict:
    """Airflow's four services, started as the quickstart starts them (its settings:
    ``airflow_settings``), with an empty DAG folder."""
    from flatcar_airflow.quickstart.command import airflow_settings

    home, dags = work / "airflow-home", work / "dags"
    home.mkdir()
    dags.mkdir()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "FLATCAR_AIRFLOW"))}
    ports = {"host": "127.0.0.1", "api": port, "url": f"http://127.0.0.1:{port}"}
    ports |= {"worker_logs": free_port(), "trigger_logs": free_port()}
    env.update(
        {"AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(dags), **airflow_settings(ports)}
    )
    airflow = str(VENV_BIN / "airflow")
    subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True, timeout=600)
    procs = []
    try:
        for service in AIRFLOW_SERVICES:
            with (work / f"{service}.log").open("wb") as out:
                procs.append(
                    subprocess.Popen(
                        [airflow, service],
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                        start_new_session=True,
                    )
                )
        _wait_for(work / "api-server.log", "Application startup complete", procs[0], 300)
        return _sample([p.pid for p in procs], settle, samples)
    finally:
        _stop(procs)


def run(smoke: bool = False) -> list[Figure]:
    settle, samples = (SMOKE_SETTLE, SMOKE_SAMPLES) if smoke else (SETTLE, SAMPLES)
    with tempfile.TemporaryDirectory(prefix="flatcar-bench-memory-") as tmp:
        work = Path(tmp)
        (work / "quickstart").mkdir()
        (work / "airflow").mkdir()
        if smoke:
            # Both at once: the smoke run only proves the code runs (each start takes about a minute).
            from concurrent.futures import ThreadPoolExecutor

            say("memory: the quickstart's stack and Airflow's four services at once (smoke)")
            with ThreadPoolExecutor(2) as pool:
                started = pool.submit(measure_quickstart, work / "quickstart", settle, samples)
                theirs = measure_airflow(work / "airflow", settle, samples)
                ours = started.result()
        else:
            say("memory: the quickstart's stack at rest")
            ours = measure_quickstart(work / "quickstart", settle, samples)
            say("memory: Airflow's four services at rest, no DAGs")
            theirs = measure_airflow(work / "airflow", settle, samples)
    kinds = {k: round(v, 1) for k, v in sorted(ours["kinds"].items())}
    return [
        Figure(
            benchmark="memory",
            name="PSS of the quickstart's stack at rest (Airflow's 4 services with the pipelines, the build "
            "cache, the supervisor)",
            value=round(ours["total"], 1),
            minimum=round(ours["min"], 1),
            unit="MB",
            runs=len(ours["samples"]),
            baseline="Airflow's 4 services at rest, empty DAG folder",
            baseline_value=round(theirs["total"], 1),
            ratio=round(ours["total"] / theirs["total"], 2) if theirs["total"] else None,
            extra={
                "kinds": kinds,
                "baseline_kinds": {k: round(v, 1) for k, v in sorted(theirs["kinds"].items())},
                "settle_s": settle,
            },
        )
    ]
