"""The OS-only pipeline under a real Airflow (``airflow standalone``: scheduler, dag-processor, API server,
LocalExecutor, SQLite) started by the test: a scheduled nightly, a refused run with bad params, a backfill
of three missed nightlies checked run by run while a manual run with params (REST API) competes for the
branch, and re-running only what failed by clearing it as the UI does."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from connections import CACHE_CONN

ROOT = Path(__file__).resolve().parent.parent
DAG_ID = "flatcar_os_flatcar_4593"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Airflow:
    def __init__(self, home: Path, env: dict[str, str]):
        self.home, self.env = home, env
        self.port = int(env["AIRFLOW__API__PORT"])
        self.api = httpx.Client(base_url=f"http://127.0.0.1:{self.port}/api/v2", timeout=30)
        self.proc: subprocess.Popen | None = None

    def cli(self, *args: str) -> str:
        airflow = Path(sys.executable).parent / "airflow"
        proc = subprocess.run(
            [str(airflow), *args], env=self.env, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout

    def start(self) -> None:
        airflow = Path(sys.executable).parent / "airflow"
        log = open(self.home / "standalone.log", "wb")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [str(airflow), "standalone"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.wait(lambda: self._get("/monitor/health") is not None, 180, "the API server to answer")
        self.wait(lambda: self._get(f"/dags/{DAG_ID}") is not None, 180, f"{DAG_ID} to be parsed")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def _get(self, path: str):
        try:
            response = self.api.get(path)
        except httpx.HTTPError:
            return None
        return response.json() if response.status_code == 200 else None

    def wait(self, condition, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"airflow standalone exited while waiting for {what}")
            if time.monotonic() > deadline:
                tail = (self.home / "standalone.log").read_text(errors="replace")[-3000:]
                raise AssertionError(f"timed out waiting for {what}\n{tail}")
            time.sleep(1)

    def runs(self) -> list[dict]:
        return self._get(f"/dags/{DAG_ID}/dagRuns?limit=100")["dag_runs"]

    def wait_for_runs(self, count: int, timeout: float = 600) -> list[dict]:
        def finished():
            runs = self.runs()
            return len(runs) >= count and all(run["state"] in ("success", "failed") for run in runs)

        self.wait(finished, timeout, f"{count} finished runs")
        return self.runs()

    def task_instances(self, run_id: str) -> dict[str, dict]:
        data = self._get(f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances?limit=100")
        return {ti["task_id"]: ti for ti in data["task_instances"]}

    def xcom(self, run_id: str, task_id: str) -> dict:
        data = self._get(f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value")
        value = data["value"]
        return json.loads(value) if isinstance(value, str) else value


@pytest.fixture
def airflow(tmp_path, mini_origin, build_cache, released_sdk, connections):
    home = tmp_path / "airflow-home"
    home.mkdir()
    config = tmp_path / "flatcar.yaml"

    def write_config(**overrides) -> None:
        settings = {
            "scripts_repo": str(mini_origin.path),
            "buildcache_conn_id": CACHE_CONN,
            "runner": {"type": "local", "root": str(tmp_path / "build-root")},
            "tagging_cache": str(tmp_path / "tag-cache"),
            "arches": {"amd64": {"formats": ["qemu_uefi"], "test_vendors": []}},
            "full": {"enabled": False, "arches": ["amd64"]},
            "os": {"branches": ["flatcar-4593"], "arches": ["amd64"], "schedule": "0 21 * * *"},
            "image_changes": None,
            "retries": 0,
            "start_date": "2026-01-01",
            "branch_lock": {"poke_interval": 3},
        }
        config.write_text(yaml.safe_dump({**settings, **overrides}))

    write_config()
    port = _free_port()
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', os.defpath)}",
        "AIRFLOW_HOME": str(home),
        "FLATCAR_AIRFLOW_CONFIG": str(config),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(_free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(_free_port()),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "1",
    }
    env.pop("AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION", None)
    server = Airflow(home, env)
    server.write_config = write_config
    server.cli("db", "migrate")
    server.cli("pools", "set", "flatcar_build_steps", "2", "Flatcar build steps")
    server.cli("pools", "set", "flatcar_tagging", "1", "Flatcar tagging")
    server.start()
    yield server
    server.stop()


def _latest_tick(now: dt.datetime) -> dt.datetime:
    tick = now.replace(hour=21, minute=0, second=0, microsecond=0)
    return tick if tick <= now else tick - dt.timedelta(days=1)


def _build_window(airflow: Airflow, run_id: str) -> tuple[dt.datetime, dt.datetime]:
    """When the run built its branch: from its branch_lock's success to its summary's end."""
    tis = airflow.task_instances(run_id)
    start = dt.datetime.fromisoformat(tis["branch_lock"]["end_date"])
    return start, dt.datetime.fromisoformat(tis["summary"]["end_date"])


def test_schedule_bad_params_backfill_against_a_manual_run_and_rerun_of_what_failed(airflow, mini_origin):
    tick = _latest_tick(dt.datetime.now(dt.UTC))
    missed = [tick - dt.timedelta(days=n) for n in (5, 4, 3)]
    # The branch moved on during the missed nights: one commit each noon.
    commits = [
        mini_origin.push_change("flatcar-4593", "README", f"{day:%F}\n", date=day.replace(hour=12))
        for day in missed
    ]

    # 1. Unpausing schedules the latest nightly (catchup is off).
    assert airflow.api.patch(f"/dags/{DAG_ID}", json={"is_paused": False}).status_code == 200
    (scheduled,) = airflow.wait_for_runs(1)
    assert scheduled["run_type"] == "scheduled" and scheduled["state"] == "success", scheduled
    nightly = f"stable-4593.2.4-nightly-{tick:%Y%m%d}-2100"
    assert airflow.xcom(scheduled["dag_run_id"], "version")["version"] == nightly
    assert mini_origin.tag_commit(nightly) == mini_origin.head(
        "flatcar-4593"
    )  # the nightly advanced the branch
    head_after_nightly = mini_origin.head("flatcar-4593")

    # 2. Bad params are refused at trigger time: no run is created.
    refused = airflow.api.post(
        f"/dags/{DAG_ID}/dagRuns",
        json={
            "logical_date": None,
            "conf": {"ref": "--upload-pack=touch /tmp/pwned"},
        },
    )
    assert refused.status_code == 400 and "ref" in refused.text
    assert len(airflow.runs()) == 1

    # 3. A backfill of the three missed nightlies, and right away a manual run with params through the
    # REST API. Airflow starts both (a backfill's runs do not count against max_active_runs); the
    # branch lock lets only one of them build at a time.
    backfill = airflow.api.post(
        "/backfills",
        json={
            "dag_id": DAG_ID,
            "from_date": missed[0].isoformat(),
            "to_date": missed[-1].isoformat(),
            "max_active_runs": 1,
            "reprocess_behavior": "none",
        },
    )
    assert backfill.status_code == 200, backfill.text
    manual = airflow.api.post(
        f"/dags/{DAG_ID}/dagRuns",
        json={
            "logical_date": None,
            "conf": {"build_id": "pr-42", "formats": ["qemu_uefi"]},
        },
    )
    assert manual.status_code == 200, manual.text
    runs = airflow.wait_for_runs(5)
    assert all(run["state"] == "success" for run in runs), runs
    assert "stable-4593.2.4-pr-42" in mini_origin.tags()
    backfilled = sorted((r for r in runs if r["run_type"] == "backfill"), key=lambda r: r["logical_date"])
    assert len(backfilled) == 3
    for run, day, commit in zip(backfilled, missed, commits, strict=True):
        version = f"stable-4593.2.4-nightly-{day:%Y%m%d}-2100"
        plan = airflow.xcom(run["dag_run_id"], "version")
        assert plan["version"] == version and plan["commit"] == commit and plan["backfill"] is True
        tagged = mini_origin.tag_commit(version)
        assert mini_origin.git("rev-parse", f"{tagged}^") == commit  # built on that night's commit
    assert mini_origin.head("flatcar-4593") == head_after_nightly  # a backfill never pushes the branch
    windows = sorted(_build_window(airflow, run["dag_run_id"]) for run in runs)
    for (_, end), (start, _) in itertools.pairwise(windows):
        assert end <= start, f"two builds of the branch overlapped: {windows}"

    # 4. Re-running only what failed: a build host's trouble fails amd64's vendor images ...
    airflow.write_config(step_env={"MINI_FAIL_STEP": "vm_build"})
    failing = airflow.api.post(
        f"/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": {"build_id": "rerun-1"}}
    )
    assert failing.status_code == 200, failing.text
    run_id = failing.json()["dag_run_id"]
    airflow.wait_for_runs(6)
    tis = airflow.task_instances(run_id)
    assert next(r for r in airflow.runs() if r["dag_run_id"] == run_id)["state"] == "failed"
    assert tis["amd64.vms"]["state"] == "failed" and tis["summary"]["state"] == "failed"
    assert tis["amd64.image"]["state"] == "success"
    image_record = airflow.xcom(run_id, "amd64.image")

    # ... the trouble is mended, and the failed task is cleared with its downstream as the UI does.
    airflow.write_config()
    cleared = airflow.api.post(
        f"/dags/{DAG_ID}/clearTaskInstances",
        json={
            "dry_run": False,
            "dag_run_id": run_id,
            "task_ids": ["amd64.vms"],
            "only_failed": True,
            "include_downstream": True,
        },
    )
    assert cleared.status_code == 200, cleared.text
    assert {ti["task_id"] for ti in cleared.json()["task_instances"]} == {"amd64.vms", "summary"}
    airflow.wait(
        lambda: airflow.task_instances(run_id)["summary"]["state"] in ("success", "failed"),
        300,
        "the cleared run to finish",
    )
    tis = airflow.task_instances(run_id)
    assert tis["summary"]["state"] == "success", tis["summary"]
    tries = {task_id: ti["try_number"] for task_id, ti in tis.items()}
    assert tries["amd64.vms"] == 2 and tries["summary"] == 2
    for task_id in ("branch_lock", "version", "tag", "packages_tag", "amd64.packages", "amd64.image"):
        assert tries[task_id] == 1, f"{task_id} ran again: {tries}"
    manifest = airflow.xcom(run_id, "summary")
    assert manifest["state"] == "success" and manifest["version"] == "stable-4593.2.4-rerun-1"
    vms = manifest["arches"]["amd64"]["vms"]
    assert vms["state"] == "success" and vms["artifacts"]
    # The vendor images were built from the first try's image, which was not built again.
    assert manifest["arches"]["amd64"]["image"]["artifacts"] == image_record["artifacts"]
