"""Local runner: the step runs as a subprocess of the Airflow worker, in its own process group.

Directories under ``root`` (default ``/var/lib/flatcar-airflow``): ``mirrors/<hash>.git`` (the host's
mirror of the scripts repo), ``pool/<hash>/<slot>`` (the pooled work trees of that repo, one per
concurrent step, kept between steps), ``workspaces/<job key>`` (a fresh work tree, when pooling is off or
every pooled tree is in use) and ``jobs/<job key>/<attempt>`` (the job's private directory, removed when
the attempt ends).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import selectors
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .base import (
    Job,
    JobOutcome,
    OutputLines,
    Runner,
    RunnerError,
    mask_job_secrets,
    render_job_env,
    wrapper_script,
)

__all__ = ["LocalRunner", "host_paths", "pool_path"]

DEFAULT_ROOT = "/var/lib/flatcar-airflow"
#: The most read from the wrapper's output at once (its pipe is made this large where the OS lets us).
_READ_BYTES = 1 << 20


def host_paths(root: str, job: Job) -> tuple[str, str, str]:
    """(mirror, workspace, job dir) of a job under a build host's root directory.

    The work tree's name is a short hash of the job key: tools the steps run put sockets under it (gpg-agent
    in ``.gnupg``), and socket paths are limited to 108 bytes.
    """
    origin = hashlib.sha256(job.origin.encode()).hexdigest()[:16]
    key = hashlib.sha256(job.key.encode()).hexdigest()[:16]
    return (
        f"{root}/mirrors/{origin}.git",
        f"{root}/workspaces/{key}",
        f"{root}/jobs/{job.key}/{job.attempt}",
    )


def pool_path(root: str, job: Job) -> str:
    """The directory of a build host's pooled work trees of the job's scripts repo (one per slot)."""
    return f"{root}/pool/{hashlib.sha256(job.origin.encode()).hexdigest()[:16]}"


def _write_private(path: Path, content: bytes | str, mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(content.encode() if isinstance(content, str) else content)


class LocalRunner(Runner):
    """Runs the step wrapper on the Airflow worker itself."""

    def __init__(self, root: str = DEFAULT_ROOT, pooled_worktrees: bool = True) -> None:
        super().__init__()
        self.root = root
        self.pooled_worktrees = pooled_worktrees
        self._proc: subprocess.Popen | None = None

    def describe(self) -> str:
        return f"local ({self.root})"

    def probe(self, script: str, env, timeout: float = 90.0) -> tuple[int, str]:
        try:
            done = subprocess.run(
                ["bash", "-c", script, "flatcar-preflight"],
                env={**os.environ, **env},
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise RunnerError(f"the checks took more than {timeout:.0f} s") from None
        return done.returncode, done.stdout + done.stderr

    def run(self, job: Job, on_output: Callable[[str], None], on_tick: Callable[[], None]) -> JobOutcome:
        mask_job_secrets(job)
        mirror, workspace, job_dir_name = host_paths(self.root, job)
        job_dir = Path(job_dir_name)
        if job_dir.exists():
            shutil.rmtree(job_dir)
        job_dir.mkdir(parents=True, mode=0o700)
        (job_dir / "flatcar-step.sh").write_text(wrapper_script())
        pool = pool_path(self.root, job) if self.pooled_worktrees else ""
        _write_private(
            job_dir / "job.env", render_job_env(job, mirror=mirror, workspace=workspace, pool=pool)
        )
        for name, content in job.files.items():
            _write_private(job_dir / name, content)
        if self.killed:
            raise RunnerError("the task was stopped before the step started")
        self._proc = subprocess.Popen(
            ["bash", str(job_dir / "flatcar-step.sh"), str(job_dir)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._follow(self._proc, on_output, on_tick)
        return self._collect(job, job_dir, on_output)

    def _follow(self, proc: subprocess.Popen, on_output, on_tick) -> None:
        selector = selectors.DefaultSelector()
        selector.register(proc.stdout, selectors.EVENT_READ)
        fd = proc.stdout.fileno()
        with contextlib.suppress(OSError, AttributeError):  # a larger pipe: fewer, larger reads
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _READ_BYTES)
        lines = OutputLines(on_output)
        try:
            while True:
                if not selector.select(timeout=1.0):
                    on_tick()
                    continue
                chunk = os.read(fd, _READ_BYTES)
                if not chunk:
                    break
                lines.feed(chunk)
                if len(chunk) < _READ_BYTES:
                    on_tick()  # the pipe is drained: what waits is logged now
        finally:
            selector.close()
            lines.close()
            proc.wait()

    def _collect(self, job: Job, job_dir: Path, on_output) -> JobOutcome:
        result = job_dir / "result.json"
        try:
            if not result.exists():
                on_output("[flatcar-airflow] the wrapper ended without a result: running the cleanup")
                self._fallback_cleanup(job_dir)
                raise RunnerError(f"the step wrapper ended without a result (exit {self._proc.returncode})")
            images = job_dir / "images.list"
            tap_dir = job_dir / "tap"
            tap = (
                {p.name: p.read_text(errors="replace") for p in sorted(tap_dir.glob("*.tap"))}
                if tap_dir.is_dir()
                else {}
            )
            return JobOutcome.from_files(
                result.read_text(), images.read_text() if images.exists() else None, tap
            )
        finally:
            shutil.rmtree(job_dir, ignore_errors=True)

    def _fallback_cleanup(self, job_dir: Path) -> None:
        """The wrapper was killed hard: run the workspace's ci-cleanup.sh ourselves."""
        env_file = job_dir / "job.env"
        if env_file.exists():
            # In its own process group: a cleanup that outlasts the grace is stopped whole, children too.
            proc = subprocess.Popen(
                ["bash", str(job_dir / "flatcar-step.sh"), "--cleanup", str(job_dir)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            try:
                proc.wait(timeout=self.stop_grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def kill(self) -> None:
        self._killed.set()
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        threading.Thread(
            target=_stop_group, args=(proc.pid, self.stop_grace, lambda: proc.poll() is not None), daemon=True
        ).start()


def _stop_group(pgid: int, grace: float, done: Callable[[], bool]) -> None:
    """SIGTERM the process group, give it ``grace`` seconds (the wrapper cleans up), then SIGKILL."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if done():
            break
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
