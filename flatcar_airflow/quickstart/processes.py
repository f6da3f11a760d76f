"""Starting and stopping the quickstart's services as whole process trees.

Every service runs in a session of its own. Stopping collects the whole tree first (a step wrapper the
LocalExecutor started runs in a session of its own too, and would be orphaned by stopping only its
parent), sends SIGTERM to all of it (the step wrapper then runs the step's cleanup), and SIGKILLs what is
left after the grace period: nothing is orphaned and no port stays held.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import psutil

__all__ = ["Service", "start_service", "stop_trees", "tree"]


class Service:
    """One started command: its name, process and log file."""

    def __init__(self, name: str, proc: subprocess.Popen, log: Path) -> None:
        self.name, self.proc, self.log = name, proc, log

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def start_service(name: str, cmd: list[str], env: Mapping[str, str], log_dir: Path) -> Service:
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            cmd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Service(name, proc, log)


def tree(pids: Iterable[int]) -> list[psutil.Process]:
    """The processes ``pids`` and all their descendants (those still running)."""
    found: dict[int, psutil.Process] = {}
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(pid)
            for proc in [root, *root.children(recursive=True)]:
                found[proc.pid] = proc
    return list(found.values())


def stop_trees(pids: Iterable[int], grace: float = 40.0) -> list[int]:
    """SIGTERM the trees of ``pids``, SIGKILL the survivors after ``grace`` s; returns the killed pids.

    Descendants that appear while the trees stop (a cleanup's ``docker rm``) are collected again.
    """
    pids = list(pids)
    procs = tree(pids)
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        procs = [proc for proc in {p.pid: p for p in procs + tree(pids)}.values() if _running(proc)]
        if not procs:
            return []
        time.sleep(0.3)
    killed = []
    for proc in tree([p.pid for p in procs]):
        with contextlib.suppress(psutil.Error):
            proc.kill()
            killed.append(proc.pid)
    psutil.wait_procs(procs, timeout=10)
    return killed


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
