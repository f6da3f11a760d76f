"""Real Airflow 3.3 servers for the tests: its components as processes the test starts and stops.

:func:`airflow_env` is the environment every component of one Airflow shares (``AIRFLOW_HOME``, the
project's ``dags/``, the flatcar-airflow configuration, free loopback ports for the API server and the
log servers, short parse and scheduler intervals, SQLite and the LocalExecutor unless overridden, the
simple auth manager). :class:`AirflowServers` starts components (``api-server``, ``scheduler``,
``dag-processor``, ``triggerer``, Celery workers, or ``standalone``), each in its own session with its
log in ``AIRFLOW_HOME/<name>.log``, stops their whole process groups, runs ``airflow`` commands and talks
to the REST API (``api``: an httpx client of ``/api/v2``, with a bearer token of the admin user once
:meth:`AirflowServers.login` ran when the auth manager does not make everyone an admin).

Used by tests/test_scheduler.py, tests/test_on_kill.py, tests/test_retention_scheduler.py,
tests/test_celery.py, tests/test_builds_page_browser.py and others.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
#: The file the simple auth manager writes the generated passwords to (in AIRFLOW_HOME).
PASSWORDS_FILE = "simple_auth_manager_passwords.json.generated"


def free_port(address: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


def log_tails(logs: Iterable[Path | str], size: int = 2500) -> str:
    """The last ``size`` characters of each log, headed by its name."""
    out = []
    for log in logs:
        path = Path(log)
        text = path.read_text(errors="replace")[-size:] if path.exists() else "(no log)"
        out.append(f"--- {path.name} ---\n{text}")
    return "\n".join(out)


def wait_until(condition: Callable[[], object], timeout: float, what: str, logs: Iterable = ()) -> None:
    """Poll ``condition`` every second until it is true; fail after ``timeout`` s with the logs' tails."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{log_tails(logs)}")
        time.sleep(1)


def stop_group(proc: subprocess.Popen, sig: int = signal.SIGTERM, grace: float = 30) -> None:
    """``sig`` to the process group of ``proc`` (started in its own session), then SIGKILL after ``grace``."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
    # Whatever is left of the group (a worker's pool processes, a task's children) goes too.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def airflow_executable() -> str:
    return str(Path(sys.executable).parent / "airflow")


def os_only_settings(origin: str, tmp_path: Path, **overrides) -> dict:
    """A flatcar-airflow configuration of the OS-only pipeline of flatcar-4593 alone (amd64, qemu_uefi,
    no test vendor, no image_changes, no retries; the nightly at 21:00) on the local runner, against
    ``origin`` and the tests' build cache connection; ``overrides`` replace top-level keys."""
    from connections import CACHE_CONN

    return {
        "scripts_repo": origin,
        "buildcache_conn_id": CACHE_CONN,
        "runner": {"type": "local", "root": str(tmp_path / "build-root")},
        "tagging_cache": str(tmp_path / "tag-cache"),
        "arches": {"amd64": {"formats": ["qemu_uefi"], "test_vendors": []}},
        "full": {"enabled": False, "arches": ["amd64"]},
        "os": {"branches": ["flatcar-4593"], "arches": ["amd64"], "schedule": "0 21 * * *"},
        "image_changes": None,
        "retries": 0,
        "start_date": "2026-01-01",
        "preflight": {"min_free_gb": 1, "network": "off"},
        **overrides,
    }


def airflow_env(home: Path, config: Path, *, all_admins: bool = True, **overrides: str) -> dict[str, str]:
    """The environment of one Airflow's components: this process's, plus Airflow's settings for a test.

    ``all_admins`` makes every request an admin's (no login: the REST API answers without a token);
    ``False`` keeps the simple auth manager's login (user ``admin``, password in ``PASSWORDS_FILE``).
    ``overrides`` are added last (``AIRFLOW__CORE__EXECUTOR``, say).
    """
    port = free_port()
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', os.defpath)}",
        "AIRFLOW_HOME": str(home),
        "FLATCAR_AIRFLOW_CONFIG": str(config),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": str(all_admins),
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "1",
    }
    env.pop("AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION", None)
    env.update(overrides)
    return env


class AirflowServers:
    """One Airflow's components as separate processes, each in its own session, sharing one environment."""

    def __init__(self, home: Path, env: dict[str, str], dag_id: str | None = None):
        self.home, self.env, self.dag_id = home, env, dag_id
        self.base_url = env["AIRFLOW__API__BASE_URL"]
        self.port = int(env["AIRFLOW__API__PORT"])
        self.api = httpx.Client(base_url=f"{self.base_url}/api/v2", timeout=30)
        self.procs: dict[str, subprocess.Popen] = {}
        self._stop_signals: dict[str, int] = {}

    @property
    def logs(self) -> list[Path]:
        return [self.home / f"{name}.log" for name in self.procs]

    def cli(self, *args: str, timeout: float = 300) -> str:
        proc = subprocess.run(
            [airflow_executable(), *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )
        assert proc.returncode == 0, f"airflow {' '.join(args)}: {proc.stderr[-3000:]}"
        return proc.stdout

    def migrate_and_create_pools(self, steps_slots: int = 2) -> None:
        """``airflow db migrate`` and the two pools of the default configuration."""
        self.cli("db", "migrate")
        self.cli("pools", "set", "flatcar_build_steps", str(steps_slots), "Flatcar build steps")
        self.cli("pools", "set", "flatcar_tagging", "1", "Flatcar tagging")

    def set_pools(self, steps_slots: int = 2) -> None:
        """The same pools through the REST API (an ``airflow pools`` command costs ~10 s of start-up)."""
        for name, slots, description in (
            ("flatcar_build_steps", steps_slots, "Flatcar build steps"),
            ("flatcar_tagging", 1, "Flatcar tagging"),
        ):
            body = {"name": name, "slots": slots, "description": description, "include_deferred": False}
            response = self.api.post("/pools", json=body)
            if response.status_code == 409:
                response = self.api.patch(f"/pools/{name}", json=body)
            assert response.status_code in (200, 201), response.text

    def start(
        self, name: str, *args: str, env: dict[str, str] | None = None, stop_signal: int = signal.SIGTERM
    ) -> subprocess.Popen:
        """Start ``airflow <args>`` (default ``airflow <name>``) in its own session, logging to <name>.log."""
        with (self.home / f"{name}.log").open("wb") as log:
            proc = subprocess.Popen(
                [airflow_executable(), *(args or (name,))],
                env={**self.env, **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs[name] = proc
        self._stop_signals[name] = stop_signal
        return proc

    def stop(self, grace: float = 30) -> None:
        """Stop every component, the last started first (a Celery worker's SIGTERM is its warm shutdown)."""
        for name in reversed(list(self.procs)):
            stop_group(self.procs[name], self._stop_signals[name], grace)
        self.api.close()

    def check_running(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise AssertionError(f"airflow {name} exited ({proc.returncode})\n{log_tails(self.logs)}")

    def get(self, path: str):
        """The JSON of a REST API GET (``/api/v2`` relative), or None unless it answered 200."""
        self.check_running()
        try:
            response = self.api.get(path)
        except httpx.HTTPError:
            return None
        return response.json() if response.status_code == 200 else None

    def wait(self, condition: Callable[[], object], timeout: float, what: str) -> None:
        wait_until(condition, timeout, what, self.logs)

    def wait_healthy(self, timeout: float = 180) -> None:
        self.wait(lambda: self.get("/monitor/health") is not None, timeout, "the API server to answer")

    def wait_for_dag(self, dag_id: str, timeout: float = 180) -> None:
        self.wait(lambda: self.get(f"/dags/{dag_id}") is not None, timeout, f"{dag_id} to be parsed")

    # -- the simple auth manager's login ----------------------------------------------------------------

    def password(self, username: str = "admin") -> str:
        """The generated password of ``username`` (written by the API server when it starts)."""
        return json.loads((self.home / PASSWORDS_FILE).read_text())[username]

    def token(self, username: str = "admin") -> str:
        """A JWT for ``username`` from ``POST /auth/token``, as a REST API client gets one."""
        response = httpx.post(
            f"{self.base_url}/auth/token",
            json={"username": username, "password": self.password(username)},
            timeout=30,
        )
        assert response.status_code in (200, 201), response.text
        return response.json()["access_token"]

    def login(self, username: str = "admin") -> str:
        """Give ``api`` a bearer token of ``username``; returns the token."""
        self.wait(lambda: (self.home / PASSWORDS_FILE).exists(), 60, f"{PASSWORDS_FILE} to be written")
        token = self.token(username)
        self.api.headers["Authorization"] = f"Bearer {token}"
        return token

    # -- runs (of ``dag_id``, default the ``dag_id`` given to the constructor) ------------------------------

    def _dag(self, dag_id: str | None) -> str:
        if not (dag_id or self.dag_id):
            raise ValueError("no dag_id given, and none given to AirflowServers()")
        return dag_id or self.dag_id

    def runs(self, dag_id: str | None = None) -> list[dict]:
        return self.get(f"/dags/{self._dag(dag_id)}/dagRuns?limit=100")["dag_runs"]

    def wait_for_runs(self, count: int, timeout: float = 600, dag_id: str | None = None) -> list[dict]:
        """Wait until the DAG has at least ``count`` runs and all have finished; returns them."""

        def finished():
            runs = self.runs(dag_id)
            return len(runs) >= count and all(run["state"] in ("success", "failed") for run in runs)

        self.wait(finished, timeout, f"{count} finished runs of {self._dag(dag_id)}")
        return self.runs(dag_id)

    def task_instances(self, run_id: str, dag_id: str | None = None) -> dict[str, dict]:
        data = self.get(f"/dags/{self._dag(dag_id)}/dagRuns/{run_id}/taskInstances?limit=100")
        return {ti["task_id"]: ti for ti in data["task_instances"]}

    def xcom(self, run_id: str, task_id: str, dag_id: str | None = None):
        path = f"/dags/{self._dag(dag_id)}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value"
        value = self.get(path)["value"]
        return json.loads(value) if isinstance(value, str) else value
