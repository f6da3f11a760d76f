"""Stopping a running step through Airflow itself: "mark failed" in the UI (the REST API's PATCH of the
task instance), then "clear", as an operator would, under a real scheduler (``airflow standalone``).

The runner-level kill tests call ``Runner.kill()`` directly; this one proves the path from Airflow to it:
the task process is told to stop, the operator's ``on_kill`` stops the step's whole tree, its cleanup runs
(the step's container and child process are gone, the work tree and job directory too), and a cleared
task runs again to success. (Only the cleared task: what follows it is the pipelines' own tests.)

Then the fault drills of the same run: the task process killed by SIGKILL mid-step (no ``on_kill``)
and Airflow restarted (scheduler and all) right after; the next attempt stops the stale step.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
import yaml
from airflow_servers import AirflowServers, airflow_env, os_only_settings, stop_group
from gitrepos import assert_nothing_of_the_step_left

DAG_ID = "flatcar_os_flatcar_4593"
STEP = "packages_tag"


@pytest.fixture
def airflow(tmp_path, mini_origin, build_cache, released_sdk, connections):
    home = tmp_path / "airflow-home"
    home.mkdir()
    config = tmp_path / "flatcar.yaml"

    def write_config(**step_env: str) -> None:
        settings = os_only_settings(str(mini_origin.path), tmp_path, step_env=step_env)
        config.write_text(yaml.safe_dump(settings))

    write_config(MINI_HANG_STEP=STEP)
    # A task whose process died unseen (the scheduler restarted meanwhile) is failed after 30 s, not 300.
    env = airflow_env(home, config, AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT="30")
    server = AirflowServers(home, env, DAG_ID)
    server.write_config = write_config
    server.build_root = tmp_path / "build-root"
    server.origin = mini_origin
    server.migrate_and_create_pools()
    server.start("standalone", stop_signal=signal.SIGINT)
    try:
        server.wait_healthy()
        server.wait_for_dag(DAG_ID)
        yield server
    finally:
        server.stop(grace=10)  # standalone takes SIGINT slowly; its group is killed after the grace


def _log(airflow: AirflowServers, run_id: str, task_id: str, attempt: int) -> str:
    response = airflow.api.get(
        f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{attempt}",
        params={"full_content": "true"},
        headers={"Accept": "application/json"},
    )
    if response.status_code != 200:
        return ""
    content = response.json().get("content") or []
    return "\n".join(event if isinstance(event, str) else json.dumps(event) for event in content)


def _hanging(log: str) -> tuple[int, str] | None:
    """(child pid, container) from the mini step's "hanging with child process N and container C"."""
    marker = "hanging with child process "
    for line in log.splitlines():
        if marker in line:
            words = line.split(marker, 1)[1].replace('"', " ").split()
            return int(words[0]), words[3]
    return None


def _container_exists(name: str) -> bool:
    out = subprocess.run(
        ["docker", "ps", "-a", "--filter", f"name=^{name}$", "--format", "{{.Names}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return bool(out.strip())


def _pid_running(pid: int, command: str) -> bool:
    try:
        return command in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace"
        )
    except OSError:
        return False


def _clear(airflow: AirflowServers, run_id: str) -> None:
    """ "Clear" the task, as the UI does it (its run is set running again)."""
    cleared = airflow.api.post(
        f"/dags/{DAG_ID}/clearTaskInstances",
        json={
            "dry_run": False,
            "dag_run_id": run_id,
            "task_ids": [STEP],
            "include_downstream": False,
            "only_failed": False,
            "reset_dag_runs": True,
        },
    )
    assert cleared.status_code == 200, cleared.text


def _wait_hanging(airflow: AirflowServers, run_id: str, attempt: int) -> tuple[int, str]:
    found: list[tuple[int, str]] = []

    def hanging() -> bool:
        ti = airflow.task_instances(run_id).get(STEP, {})
        running = ti.get("state") == "running" and ti.get("try_number") == attempt
        hang = _hanging(_log(airflow, run_id, STEP, attempt)) if running else None
        if hang:
            found.append(hang)
        return bool(hang)

    airflow.wait(hanging, 300, f"{STEP} attempt {attempt} to hang")
    return found[-1]


def test_mark_failed_stops_the_step_through_on_kill_and_clear_runs_it_again(airflow):
    assert airflow.api.patch(f"/dags/{DAG_ID}", json={"is_paused": False}).status_code == 200
    airflow.wait(lambda: airflow.runs(), 120, "the scheduled nightly")
    run_id = airflow.runs()[0]["dag_run_id"]
    child, container = _wait_hanging(airflow, run_id, 1)
    assert _container_exists(container) and _pid_running(child, "sleep")

    # "Mark failed", as the UI does it.
    marked = airflow.api.patch(
        f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{STEP}", json={"new_state": "failed"}
    )
    assert marked.status_code == 200, marked.text

    airflow.wait(
        lambda: not _container_exists(container) and not _pid_running(child, "sleep"),
        120,
        "on_kill to stop the step's container and child process",
    )
    airflow.wait(lambda: not list(airflow.build_root.glob("jobs/*/*")), 60, "the job directory to go")
    assert_nothing_of_the_step_left(airflow.build_root)  # the pooled work tree stays, clean (runners.md)
    log = _log(airflow, run_id, STEP, 1)
    assert f"Stopping {STEP}: its process tree and containers are stopped" in log
    assert "running ./ci-cleanup.sh" in log
    airflow.wait(
        lambda: (airflow.get(f"/dags/{DAG_ID}/dagRuns/{run_id}") or {}).get("state") == "failed",
        300,
        "the run to fail",
    )

    # "Clear" the task, with the hang knob gone: it runs again, to success.
    airflow.write_config()
    _clear(airflow, run_id)

    def rerun() -> dict:
        ti = airflow.task_instances(run_id)[STEP]
        return ti if ti["state"] == "success" and ti["try_number"] == 2 else {}

    airflow.wait(rerun, 300, f"the cleared {STEP} to run again and succeed")
    assert "mini-scripts: hanging" not in _log(airflow, run_id, STEP, 2)
    airflow.wait(lambda: not list(airflow.build_root.glob("jobs/*/*")), 60, "the job directory to go")
    assert_nothing_of_the_step_left(airflow.build_root)

    _sigkill_the_task_process_and_restart_the_scheduler(airflow, run_id)


def _sigkill_the_task_process_and_restart_the_scheduler(airflow: AirflowServers, run_id: str) -> None:
    """Fault drills under the real scheduler: the task process dies by SIGKILL mid-step (nothing of ours
    stops the step: it runs on, in its own session), and Airflow (scheduler and all) restarts right
    after. The attempt ends failed (or is reset and run again: either is fine); the next attempt stops
    the stale step, its container and child process, cleans up and completes; nothing is left."""
    tags = airflow.origin.tags()
    airflow.write_config(MINI_HANG_STEP=STEP)
    _clear(airflow, run_id)
    child, container = _wait_hanging(airflow, run_id, 3)
    (pid_file,) = airflow.build_root.glob("jobs/*/3/pid")
    wrapper = int(pid_file.read_text())
    status = Path(f"/proc/{wrapper}/status").read_text()
    task_process = int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))
    title = Path(f"/proc/{task_process}/cmdline").read_text(errors="replace")  # Airflow may set its title
    assert task_process > 1 and ("airflow" in title or "python" in title), title
    os.kill(task_process, signal.SIGKILL)

    airflow.write_config()  # the hang knob off, for whatever runs next
    stop_group(airflow.procs["standalone"], signal.SIGINT, grace=10)
    assert _container_exists(container) and _pid_running(child, "sleep")  # the stale step runs on
    airflow.start("standalone", stop_signal=signal.SIGINT)
    airflow.wait_healthy()

    def settled() -> dict:
        ti = airflow.task_instances(run_id)[STEP]
        return ti if ti["state"] in ("failed", "success") and ti["try_number"] >= 3 else {}

    airflow.wait(settled, 300, f"the killed attempt of {STEP} to be failed (or reset and run again)")
    if airflow.task_instances(run_id)[STEP]["state"] == "failed":
        airflow.wait(
            lambda: (airflow.get(f"/dags/{DAG_ID}/dagRuns/{run_id}") or {}).get("state") == "failed",
            120,
            "the run to fail",
        )
        _clear(airflow, run_id)

    def done() -> dict:
        ti = airflow.task_instances(run_id)[STEP]
        return ti if ti["state"] == "success" and ti["try_number"] >= 4 else {}

    airflow.wait(done, 300, f"the next attempt of {STEP} to stop the stale step and succeed")
    attempt = airflow.task_instances(run_id)[STEP]["try_number"]
    assert "stopping an earlier attempt of this step (3" in _log(airflow, run_id, STEP, attempt)
    airflow.wait(
        lambda: not _container_exists(container) and not _pid_running(child, "sleep"),
        60,
        "the stale step's container and child process to go",
    )
    airflow.wait(lambda: not list(airflow.build_root.glob("jobs/*/*")), 60, "the job directories to go")
    assert_nothing_of_the_step_left(airflow.build_root)
    assert airflow.origin.tags() == tags  # the restart and the re-runs made no other tag
    assert tags.count(airflow.xcom(run_id, "tag")["tag"]) == 1
