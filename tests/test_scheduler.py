"""The OS-only pipeline under a real Airflow (``airflow standalone``: scheduler, dag-processor, API server,
LocalExecutor, SQLite) started by the test: a scheduled nightly, a refused run with bad params, a backfill
of three missed nightlies checked run by run while a manual run with params (REST API) competes for the
branch, and re-running only what failed by clearing it as the UI does."""

from __future__ import annotations

import datetime as dt
import itertools
import signal

import pytest
import yaml
from airflow_servers import AirflowServers, airflow_env, os_only_settings

DAG_ID = "flatcar_os_flatcar_4593"


class Airflow(AirflowServers):
    """``airflow standalone``: its components (and a triggerer) in one process tree."""

    def start_standalone(self) -> None:
        self.start("standalone", stop_signal=signal.SIGINT)
        self.wait_healthy()
        self.wait_for_dag(DAG_ID)


@pytest.fixture
def airflow(tmp_path, mini_origin, build_cache, released_sdk, connections):
    home = tmp_path / "airflow-home"
    home.mkdir()
    config = tmp_path / "flatcar.yaml"

    def write_config(**overrides) -> None:
        settings = os_only_settings(str(mini_origin.path), tmp_path, branch_lock={"poke_interval": 3})
        config.write_text(yaml.safe_dump({**settings, **overrides}))

    write_config()
    server = Airflow(home, airflow_env(home, config), DAG_ID)
    server.write_config = write_config
    server.migrate_and_create_pools()
    server.start_standalone()
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
