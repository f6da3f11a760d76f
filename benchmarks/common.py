"""What every benchmark shares: figures, paired timing, the machine, free ports.

A figure is one measured value against a baseline measured in the same run: the machines are shared
and noisy, so the harness reports medians and minimums of repeats and the median of the ratios of
pairs measured one right after the other (A B A B …), which holds when the machine's speed drifts.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


@dataclass
class Figure:
    """One row of the table: ``value`` (a median) against ``baseline_value`` measured in the same run.

    ``ratio`` is the median of per-pair ratios when the two were measured in pairs, else value/baseline.
    ``goal`` is the text of the goal; ``met`` whether it holds (None: no goal, or not measured here).
    """

    benchmark: str
    name: str
    value: float
    unit: str
    baseline: str = ""
    baseline_value: float | None = None
    ratio: float | None = None
    goal: str = ""
    met: bool | None = None
    minimum: float | None = None
    runs: int = 0
    note: str = ""
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Samples:
    values: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def min(self) -> float:
        return min(self.values)

    @property
    def max(self) -> float:
        return max(self.values)


def ratio_of_pairs(a: Sequence[float], b: Sequence[float]) -> float:
    """The median of a[i]/b[i]: pairs measured back to back share the machine's state of the moment."""
    return statistics.median(x / y for x, y in zip(a, b, strict=True) if y > 0)


def paired(a: Callable[[], float], b: Callable[[], float], runs: int, warmup: int = 1):
    """Call ``a`` and ``b`` in turn (A B A B …) after ``warmup`` unmeasured pairs; each returns seconds.

    Returns (Samples of a, Samples of b, median ratio a/b of the pairs).
    """
    for _ in range(warmup):
        a()
        b()
    xs, ys = [], []
    for _ in range(runs):
        xs.append(a())
        ys.append(b())
    return Samples(xs), Samples(ys), ratio_of_pairs(xs, ys)


def timed(func: Callable[[], object]) -> Callable[[], float]:
    """``func`` as a callable returning its wall time in seconds."""

    def run() -> float:
        started = time.perf_counter()
        func()
        return time.perf_counter() - started

    return run


def run_process(cmd: Sequence[str], env: dict[str, str] | None = None, timeout: float = 600) -> str:
    """Run ``cmd``; its standard output, or RuntimeError with the end of its standard error."""
    proc = subprocess.run(
        list(cmd), env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd[:3]))} failed ({proc.returncode}): {proc.stderr[-3000:]}")
    return proc.stdout


def free_port(address: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


def machine() -> dict[str, object]:
    """CPU, cores, RAM, kernel, Python, Airflow: what the table's figures were measured on."""
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        memory = round(int(Path("/proc/meminfo").read_text().split()[1]) / 1024 / 1024, 1)
    try:
        from importlib.metadata import version

        airflow = version("apache-airflow")
    except Exception:  # a benchmark without Airflow still says its machine
        airflow = "?"
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": memory,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "airflow": airflow,
        "load": [round(x, 2) for x in load],
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


#: The test sessions' machine-wide docker lock (tests/infra.py): builds of the same versions on one
#: docker engine collide (container names), so a benchmark that runs steps takes turns with them.
DOCKER_LOCK = Path(tempfile.gettempdir()) / "flatcar-airflow-tests-docker.lock"


@contextlib.contextmanager
def docker_lock(wait: float = 900):
    """Hold DOCKER_LOCK, unless the caller holds it already (FLATCAR_BENCH_DOCKER_LOCK_HELD=1: a test)."""
    if os.environ.get("FLATCAR_BENCH_DOCKER_LOCK_HELD") == "1":
        yield
        return
    with DOCKER_LOCK.open("a+") as lock:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"another session held {DOCKER_LOCK} for {wait:.0f} s") from None
                time.sleep(1)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
