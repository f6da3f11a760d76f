"""Scale-out on Celery, for real: a full build of amd64 and arm64, each arch's steps on its own queue.

The test starts, on loopback, a Redis broker and a PostgreSQL metadata database (Debian's ``redis-server``
and ``postgresql``, each with its own data directory and port), and Airflow as separate processes: the
API server, the scheduler, the dag-processor and two Celery workers, ``worker-amd64`` (queues ``default``
and ``amd64``) and ``worker-arm64`` (queue ``arm64``). The workers tell themselves apart through
``[core] hostname_callable`` (tests/worker_names.py), so every task instance records which worker ran it.
A manual run of ``flatcar_full`` (REST API) builds the miniature scripts repository for both arches with
the local runner, a different root per arch; then the task instances (REST API) show every arm64 step on
the arm64 worker and queue, every amd64 step on the amd64 worker and queue, and everything else on the
default queue, and their logs show each arch's runner.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from airflow_servers import AirflowServers, airflow_env
from celery_backends import MissingTool, celery_settings, postgres_server, redis_server
from connections import CACHE_CONN

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
DAG_ID = "flatcar_full"
ARCHES = ("amd64", "arm64")
#: The workers: name → the queues it listens on.
WORKERS = {"worker-amd64": "default,amd64", "worker-arm64": "arm64"}
NOT_PER_ARCH = ("branch_lock", "version", "tag", "sdk_bootstrap", "sdk_container", "summary")


# -- PostgreSQL and Redis (tests/celery_backends.py) ---------------------------------------------------


@pytest.fixture
def postgres():
    """A PostgreSQL server on 127.0.0.1; yields the URL of database ``airflow``."""
    try:
        with postgres_server() as url:
            yield url
    except MissingTool as err:
        pytest.fail(str(err))


@pytest.fixture
def redis_broker(tmp_path):
    """A Redis server on 127.0.0.1 (no persistence); yields its URL."""
    try:
        with redis_server(tmp_path / "redis") as url:
            yield url
    except MissingTool as err:
        pytest.fail(str(err))


# -- Airflow ------------------------------------------------------------------------------------------------


@pytest.fixture
def celery_cluster(tmp_path, postgres, redis_broker, mini_origin, build_cache, seed_sdk, connections):
    home = tmp_path / "airflow-home"
    home.mkdir()
    config = tmp_path / "flatcar.yaml"
    roots = {arch: tmp_path / f"{arch}-host" for arch in ARCHES}
    config.write_text(
        yaml.safe_dump(
            {
                "scripts_repo": str(mini_origin.path),
                "buildcache_conn_id": CACHE_CONN,
                "runner": {"type": "local", "root": str(tmp_path / "build-root")},
                "queue": "default",
                "tagging_cache": str(tmp_path / "tag-cache"),
                "arches": {
                    arch: {
                        "formats": ["qemu_uefi"],
                        "test_vendors": ["qemu_uefi"],
                        "queue": arch,
                        "runner": {"type": "local", "root": str(roots[arch])},
                    }
                    for arch in ARCHES
                },
                "full": {"arches": list(ARCHES), "schedule": None},
                "os": {"branches": []},
                "image_changes": None,
                "retries": 0,
                "heartbeat_interval": 30,
                "preflight": {"min_free_gb": 1, "network": "off"},
            }
        )
    )
    env = airflow_env(
        home,
        config,
        # The code under test is this tree's (the workers also import tests/worker_names.py).
        PYTHONPATH=os.pathsep.join([str(ROOT), str(TESTS)]),
        **celery_settings(postgres, redis_broker),
    )
    env.pop("AIRFLOW__CORE__HOSTNAME_CALLABLE", None)
    cluster = AirflowServers(home, env)
    cluster.roots = roots
    cluster.migrate_and_create_pools()
    build_cache.clear()
    try:
        cluster.start("api-server")
        cluster.wait_healthy()
        cluster.start("scheduler")
        cluster.start("dag-processor")
        for name, queues in WORKERS.items():
            cluster.start(
                name,
                "celery",
                "worker",
                "--queues",
                queues,
                "--concurrency",
                "2",
                "--celery-hostname",
                f"{name}@%h",
                "--pid",
                str(home / f"{name}.pid"),
                "--skip-serve-logs",
                env={
                    "FLATCAR_TEST_WORKER": name,
                    "AIRFLOW__CORE__HOSTNAME_CALLABLE": "worker_names.hostname",
                },
            )
        cluster.wait_for_dag(DAG_ID)
        yield cluster
    finally:
        cluster.stop()
        build_cache.clear()


def test_each_arch_builds_on_its_own_worker(celery_cluster, mini_origin, build_cache):
    cluster = celery_cluster
    assert cluster.api.patch(f"/dags/{DAG_ID}", json={"is_paused": False}).status_code == 200
    triggered = cluster.api.post(
        f"/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": {"build_id": "celery-1"}}
    )
    assert triggered.status_code == 200, triggered.text
    run_id = triggered.json()["dag_run_id"]

    def finished() -> bool:
        run = cluster.get(f"/dags/{DAG_ID}/dagRuns/{run_id}")
        return run is not None and run["state"] in ("success", "failed")

    cluster.wait(finished, 360, "the build to finish")
    data = cluster.get(f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances?limit=100")
    tis = {ti["task_id"]: ti for ti in data["task_instances"]}
    placement = {task_id: (ti["state"], ti["queue"], ti["hostname"]) for task_id, ti in tis.items()}
    assert cluster.get(f"/dags/{DAG_ID}/dagRuns/{run_id}")["state"] == "success", placement

    per_arch = ("packages", "push_packages", "image", "vms", "test_qemu_uefi")
    expected = {task_id: ("success", "default", "worker-amd64") for task_id in (*NOT_PER_ARCH, "preflight")}
    for arch in ARCHES:
        # Each arch's build host gets its preflight on its own queue (docs/runners.md#preflight).
        expected.update(
            {f"{arch}.{step}": ("success", arch, f"worker-{arch}") for step in (*per_arch, "preflight")}
        )
    assert placement == expected

    # Each arch's steps ran through its arch's runner (a local runner with a root of its own).
    for arch in ARCHES:
        for step in per_arch:
            task_id = f"{arch}.{step}"
            log = cluster.api.get(
                f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}/logs/1",
                headers={"Accept": "application/json"},
            )
            assert log.status_code == 200, log.text
            assert f"on local ({cluster.roots[arch]})" in log.text, (task_id, log.text[-2000:])

    summary = cluster.get(f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/summary/xcomEntries/return_value")
    summary = json.loads(summary["value"]) if isinstance(summary["value"], str) else summary["value"]
    assert summary["state"] == "success" and summary["version"].endswith("-celery-1"), summary
    assert summary["version"] in mini_origin.tags()
    version = summary["versionfile"]["FLATCAR_VERSION"]
    for arch in ARCHES:
        manifest = build_cache.path(f"images/{arch}/{version}/flatcar-airflow-manifest.json")
        assert json.loads(manifest.read_text())["run_id"] == run_id
        assert summary["arches"][arch]["image"]["artifacts"], summary["arches"][arch]
        assert summary["tests"][arch]["qemu_uefi"]["failed"] == 0
