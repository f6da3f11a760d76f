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

import contextlib
import glob
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml
from airflow_servers import AirflowServers, airflow_env, free_port, log_tails, stop_group, wait_until
from connections import CACHE_CONN

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
DAG_ID = "flatcar_full"
ARCHES = ("amd64", "arm64")
#: The workers: name → the queues it listens on.
WORKERS = {"worker-amd64": "default,amd64", "worker-arm64": "arm64"}
NOT_PER_ARCH = ("branch_lock", "version", "tag", "sdk_bootstrap", "sdk_container", "summary")


# -- PostgreSQL and Redis --------------------------------------------------------------------------------


def _pg_tool(name: str) -> str:
    for bindir in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(bindir, name).exists():
            return str(Path(bindir, name))
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is missing (apt-get install postgresql; scripts/run-tests.sh does it)")
    return found


@pytest.fixture
def postgres():
    """A PostgreSQL server on 127.0.0.1 with its own data directory; yields the URL of database ``airflow``.

    Run as the ``postgres`` user when the tests run as root (initdb and postgres refuse root); the data
    directory is outside pytest's root-only temporary directory for that reason.
    """
    as_user = {"user": "postgres", "group": "postgres"} if os.geteuid() == 0 else {}
    data = Path(tempfile.mkdtemp(prefix="flatcar-airflow-pg-"))
    if as_user:
        shutil.chown(data, "postgres", "postgres")
    port = free_port()
    pg_ctl = _pg_tool("pg_ctl")
    log = data / "server.log"

    def run(*cmd: str) -> None:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, **as_user
        )
        assert proc.returncode == 0, f"{' '.join(cmd)}: {proc.stdout}{proc.stderr}\n{log_tails([log])}"

    try:
        run(_pg_tool("initdb"), "-D", str(data / "db"), "-U", "airflow", "--auth=trust", "--no-sync")
        options = (
            f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c max_connections=200 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        run(pg_ctl, "-D", str(data / "db"), "-l", str(log), "-o", options, "-w", "-t", "60", "start")
        run(_pg_tool("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "airflow", "airflow")
        yield f"airflow@127.0.0.1:{port}/airflow"
    finally:
        if (data / "db/postmaster.pid").exists():
            stop = subprocess.run(
                [pg_ctl, "-D", str(data / "db"), "-m", "fast", "-w", "-t", "60", "stop"],
                capture_output=True,
                timeout=90,
                **as_user,
            )
            if stop.returncode != 0 and (data / "db/postmaster.pid").exists():
                pid = int((data / "db/postmaster.pid").read_text().split()[0])
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture
def redis_broker(tmp_path):
    """A Redis server on 127.0.0.1 (no persistence); yields its URL."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.fail("redis-server is missing (apt-get install redis-server; scripts/run-tests.sh does it)")
    port = free_port()
    workdir = tmp_path / "redis"
    workdir.mkdir()
    log = workdir / "redis.log"
    with log.open("wb") as out:
        options = f"--port {port} --bind 127.0.0.1 --appendonly no --daemonize no --dir {workdir}".split()
        proc = subprocess.Popen(
            [server, *options, "--save", ""],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def answers() -> bool:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
        return False

    try:
        wait_until(answers, 30, "redis-server to answer", [log])
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop_group(proc, grace=15)


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
        AIRFLOW__CORE__EXECUTOR="CeleryExecutor",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"postgresql+psycopg2://{postgres}",
        AIRFLOW__CELERY__BROKER_URL=redis_broker,
        # SQLAlchemy 2.1's default PostgreSQL driver is psycopg 3: name psycopg2.
        AIRFLOW__CELERY__RESULT_BACKEND=f"db+postgresql+psycopg2://{postgres}",
        AIRFLOW__CELERY__WORKER_CONCURRENCY="2",
        AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT="259200",
        AIRFLOW__API__WORKERS="1",
        # The API server signs the workers' task tokens: one secret for every process.
        AIRFLOW__API_AUTH__JWT_SECRET=secrets.token_urlsafe(64),
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
