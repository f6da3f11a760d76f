"""Redis and PostgreSQL for a CeleryExecutor Airflow, on loopback: the broker and the metadata database.

Debian's ``redis-server`` and ``postgresql``, each with its own data directory and a free port, started
and stopped as context managers. Used by tests/test_celery.py (as fixtures) and by the orchestration
benchmark's CeleryExecutor stack (benchmarks/orchestration.py): one copy of how to start them.
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from airflow_servers import free_port, log_tails, stop_group, wait_until


class MissingTool(RuntimeError):
    """A server's program is not installed (the message says which package gives it)."""


def _pg_tool(name: str) -> str:
    for bindir in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(bindir, name).exists():
            return str(Path(bindir, name))
    found = shutil.which(name)
    if found is None:
        raise MissingTool(f"{name} is missing (apt-get install postgresql; scripts/run-tests.sh does it)")
    return found


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """A PostgreSQL server on 127.0.0.1 with its own data directory; yields the URL of database ``airflow``
    (``airflow@127.0.0.1:<port>/airflow``, no password: trust authentication on loopback).

    Run as the ``postgres`` user when the caller is root (initdb and postgres refuse root); the data
    directory is made with ``mkdtemp`` outside any root-only temporary directory for that reason.
    """
    as_user = {"user": "postgres", "group": "postgres"} if os.geteuid() == 0 else {}
    pg_ctl = _pg_tool("pg_ctl")
    data = Path(tempfile.mkdtemp(prefix="flatcar-airflow-pg-"))
    if as_user:
        shutil.chown(data, "postgres", "postgres")
    port = free_port()
    log = data / "server.log"

    def run(*cmd: str) -> None:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, **as_user
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: {proc.stdout}{proc.stderr}\n{log_tails([log])}")

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


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    """A Redis server on 127.0.0.1 (no persistence, its files in ``workdir``); yields its URL."""
    server = shutil.which("redis-server")
    if server is None:
        raise MissingTool(
            "redis-server is missing (apt-get install redis-server; scripts/run-tests.sh does it)"
        )
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
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


def celery_settings(postgres: str, broker: str, concurrency: int = 2) -> dict[str, str]:
    """Airflow's settings for the CeleryExecutor on ``postgres`` (a :func:`postgres_server` URL) and
    ``broker`` (a :func:`redis_server` URL), for :func:`airflow_servers.airflow_env`."""
    return {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{postgres}",
        "AIRFLOW__CELERY__BROKER_URL": broker,
        # SQLAlchemy 2.1's default PostgreSQL driver is psycopg 3: name psycopg2.
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql+psycopg2://{postgres}",
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(concurrency),
        "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "259200",
        "AIRFLOW__API__WORKERS": "1",
        # The API server signs the workers' task tokens: one secret for every process.
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),
    }
