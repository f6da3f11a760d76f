"""``flatcar-airflow quickstart [start|stop|status]``: the main job on one machine.

``start`` runs in the foreground: it prepares the state (first start: the build cache's keys and CA, the
demo origin and images, the Airflow database), starts the build cache and Airflow's four services, creates
the connection and pools, triggers the demo build (first start only) and prints where to look. Ctrl-C,
SIGTERM or ``quickstart stop`` stops every process it started, whole trees.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from .home import Home, default_home

__all__ = ["add_arguments", "run"]

DEMO_CONN_ID = "flatcar_buildcache"
DEMO_DAG_ID = "flatcar_full"
SERVICES = ("api-server", "scheduler", "dag-processor", "triggerer")


class QuickstartError(RuntimeError):
    """The quickstart cannot go on; the message says why and what to do."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", nargs="?", default="start", choices=("start", "stop", "status"))
    parser.add_argument(
        "--home", type=Path, help="state directory ($FLATCAR_AIRFLOW_HOME, else ~/.local/share)"
    )
    parser.add_argument("--config", type=Path, help="a real configuration instead of the demo profile")
    parser.add_argument("--port", type=int, help="the UI and REST API port (default 8080, or the last one)")
    parser.add_argument("--host", default=None, help="address the UI listens on (default 127.0.0.1)")
    parser.add_argument("--no-demo-build", action="store_true", help="do not trigger the demo build")


def run(args: argparse.Namespace) -> int:
    home = Home((args.home or default_home()).absolute())
    try:
        if args.action == "stop":
            return _stop(home)
        if args.action == "status":
            return _status(home)
        return Quickstart(home, args).start()
    except QuickstartError as err:
        print(f"quickstart: {err}", file=sys.stderr, flush=True)
        return 1


def _say(message: str) -> None:
    print(f"quickstart: {message}", flush=True)


def airflow_settings(ports: dict) -> dict[str, str]:
    """Airflow's settings of the quickstart that depend on neither its home nor this checkout: the
    executor, parallelism, the simple auth manager's user, the re-parse interval, and the addresses in
    ``ports`` (``host``, ``api``, ``url``, ``worker_logs``, ``trigger_logs``). The memory benchmark's
    baseline (benchmarks/memory.py) starts Airflow with these too."""
    return {
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{ports['api']}/execution/",
        "AIRFLOW__API__HOST": ports["host"],
        "AIRFLOW__API__PORT": str(ports["api"]),
        "AIRFLOW__API__BASE_URL": ports["url"],
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(ports["worker_logs"]),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(ports["trigger_logs"]),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
    }


# -- stop and status (from another shell) -------------------------------------------------------------------


def _holder(home: Home) -> int | None:
    """The pid of the running quickstart (it holds the lock file), or None."""
    if not home.lock_file.exists():
        return None
    with home.lock_file.open("r") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            text = lock.read().strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(lock, fcntl.LOCK_UN)
    return None


def _stop(home: Home) -> int:
    from .processes import stop_trees, tree

    pid = _holder(home)
    state = home.read_state()
    if pid and pid > 0:
        _say(f"stopping the quickstart (pid {pid})")
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 120
        while _holder(home) is not None and time.monotonic() < deadline:
            time.sleep(0.5)
        if _holder(home) is not None:
            _say("it did not stop within 120 s: killing its processes")
    # Whatever a crashed quickstart left behind (pids that are still ours: a pid can be reused).
    leftovers = [p for p in state.get("pids", []) if tree([p]) and _ours(home, p)]
    if pid and pid > 0 and _holder(home) is not None:
        leftovers.append(pid)
    if leftovers:
        stop_trees(leftovers, grace=20)
        _say(f"stopped leftover processes {leftovers}")
    if not pid and not leftovers:
        _say(f"not running ({home.root})")
    else:
        _say("stopped")
    return 0


def _ours(home: Home, pid: int) -> bool:
    """Whether ``pid`` is a process of this quickstart: its state directory on its command line or in
    its AIRFLOW_HOME."""
    import psutil

    try:
        proc = psutil.Process(pid)
        if str(home.root) in " ".join(proc.cmdline()):
            return True
        return proc.environ().get("AIRFLOW_HOME", "").startswith(str(home.root))
    except psutil.Error:
        return False


def _status(home: Home) -> int:
    pid = _holder(home)
    state = home.read_state()
    print(json.dumps({"running": bool(pid), "pid": pid, "home": str(home.root), **state}, indent=2))
    return 0 if pid else 3


# -- start ---------------------------------------------------------------------------------------------------


def _free(address: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError:
            return False
    return True


def _any_free_port(address: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


def _cache_address(previous: str | None) -> str:
    """A loopback address whose port 443 is free (the scripts read https://BUILDCACHE_SERVER/)."""
    candidates = [previous] if previous else []
    candidates += [f"127.0.0.{n}" for n in range(1, 60)]
    for address in candidates:
        if address and _free(address, 443):
            return address
    raise QuickstartError("no loopback address has port 443 free for the build cache's HTTPS server")


class Quickstart:
    def __init__(self, home: Home, args: argparse.Namespace) -> None:
        self.home = home
        self.args = args
        self.repo = Path(__file__).resolve().parents[2]
        self.venv_bin = Path(sys.executable).parent
        self.services: list = []
        self.cache = None
        self._stopping = False

    # The whole start, in order; everything it starts is stopped on the way out.
    def start(self) -> int:
        self.home.root.mkdir(parents=True, exist_ok=True)
        with self.home.lock_file.open("a+") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.seek(0)
                raise QuickstartError(
                    f"already running (pid {lock.read().strip()}) with state in {self.home.root}; "
                    "stop it with: bash scripts/quickstart.sh stop"
                ) from None
            lock.seek(0)
            lock.truncate()
            lock.write(str(os.getpid()))
            lock.flush()
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(signum, self._on_signal)
            try:
                return self._start()
            except KeyboardInterrupt:
                return 0
            finally:
                self._shutdown()

    def _on_signal(self, signum, _frame) -> None:
        if not self._stopping:
            self._stopping = True
            raise KeyboardInterrupt

    def _start(self) -> int:
        self._preflight()
        state = self.home.read_state()
        ports = self._ports(state)
        config = self._configuration()
        self._start_cache(state)
        # Recorded at once: a quickstart killed hard from here on leaves nothing `stop` cannot find.
        server = self.cache.settings().server
        state = {**state, "ports": ports, "cache_address": server, "pids": self.cache.pids}
        self.home.write_state(state)
        env = self._airflow_env(ports, config)
        self._write_env_file(env)
        _say("migrating the Airflow database")
        self._airflow(env, "db", "migrate")
        from flatcar_airflow.buildcache_server import ServerError
        from flatcar_airflow.buildcache_server.cli import create_connection
        from flatcar_airflow.config import load_config

        conn_id = load_config(config).buildcache_conn_id
        try:
            create_connection(conn_id, self.cache.connection(), str(self.venv_bin / "airflow"), env)
        except ServerError as err:
            raise QuickstartError(f"cannot create the connection {conn_id}: {err}") from None
        self._run([str(self.venv_bin / "flatcar-airflow"), "pools", "--config", str(config)], env)
        self._start_airflow(env, ports)
        api = self._api(ports)
        dag_ids = self._wait_for_dags(api, config)
        run_url = None
        if self.args.config is None:
            api.patch(f"/api/v2/dags/{DEMO_DAG_ID}", json={"is_paused": False}).raise_for_status()
            runs = api.get(f"/api/v2/dags/{DEMO_DAG_ID}/dagRuns", params={"limit": 1}).json()
            if not runs["total_entries"] and not self.args.no_demo_build:
                response = api.post(
                    f"/api/v2/dags/{DEMO_DAG_ID}/dagRuns", json={"logical_date": None, "conf": {}}
                )
                response.raise_for_status()
                run_url = f"{ports['url']}/dags/{DEMO_DAG_ID}/runs/{response.json()['dag_run_id']}"
        self._banner(ports, dag_ids, run_url, config)
        return self._watch()

    def _preflight(self) -> None:
        for tool in ("git", "docker", "ssh", "rsync", "openssl"):
            if shutil.which(tool) is None:
                raise QuickstartError(
                    f"{tool} is not installed: run bash scripts/quickstart.sh (it installs it)"
                )
        proc = subprocess.run(["docker", "info"], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise QuickstartError(
                "the docker engine does not answer (docker info): the build steps start SDK containers; "
                "start dockerd, or run bash scripts/quickstart.sh as root"
            )
        if not (self.venv_bin / "airflow").exists():
            raise QuickstartError(
                f"airflow is not installed in {self.venv_bin}: run bash scripts/quickstart.sh"
            )

    def _configuration(self) -> Path:
        from flatcar_airflow.config import ConfigError, load_config

        if self.args.config is not None:
            config = self.args.config.absolute()
            try:
                load_config(config)
            except ConfigError as err:
                raise QuickstartError(str(err)) from None
            return config
        from flatcar_airflow.demo import find_mini_scripts, make_demo_images, make_demo_origin

        mini = find_mini_scripts()
        if not self.home.demo_origin.exists():
            _say(f"making the demo scripts origin {self.home.demo_origin} from {mini}")
            make_demo_origin(self.home.demo_origin, mini)
        made = make_demo_images(mini)
        if made:
            _say(f"made the demo images {', '.join(made)} (busybox-based, local only)")
        self.home.demo_config.write_text(_demo_config(self.home))
        return self.home.demo_config

    def _ports(self, state: dict) -> dict:
        previous = state.get("ports", {})
        host = self.args.host or previous.get("host") or "127.0.0.1"
        port = self.args.port or previous.get("api") or 8080
        if not _free(host, port):
            raise QuickstartError(f"port {port} on {host} is in use: give another with --port")
        ports = {"host": host, "api": port}
        for name, default in (("worker_logs", 8793), ("trigger_logs", 8794)):
            wanted = previous.get(name) or default
            ports[name] = wanted if _free("0.0.0.0", wanted) else _any_free_port()  # noqa: S104
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104
        ports["url"] = f"http://{shown}:{port}"
        return ports

    def _start_cache(self, state: dict) -> None:
        from flatcar_airflow.buildcache_server import BuildCacheServer, ServerError, Settings

        server = BuildCacheServer(self.home.buildcache)
        known = server.settings_file.exists()
        settings = server.settings() if known else Settings()
        # The last address and ssh port again if they are free (the certificate and connection stay).
        address = _cache_address(settings.server if known else None)
        if not known or not _free(address, settings.ssh_port):
            settings.ssh_port = _any_free_port(address)
        settings.server = settings.listen = address
        try:
            server.init(settings)
            server.start()
        except ServerError as err:
            raise QuickstartError(f"the build cache did not start: {err}") from None
        self.cache = server
        _say(f"build cache: https://{address}/ (ssh port {settings.ssh_port}), files in {server.data}")

    def _airflow_env(self, ports: dict, config: Path) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("AIRFLOW__") and key not in ("AIRFLOW_HOME", "FLATCAR_AIRFLOW_CONFIG")
        }
        env.update(
            {
                "PATH": f"{self.venv_bin}{os.pathsep}{env.get('PATH', os.defpath)}",
                "AIRFLOW_HOME": str(self.home.airflow),
                "FLATCAR_AIRFLOW_CONFIG": str(config),
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.repo / "dags"),
                "AIRFLOW__CORE__PLUGINS_FOLDER": str(self.repo / "plugins"),
                **airflow_settings(ports),
            }
        )
        return env

    def _write_env_file(self, env: dict[str, str]) -> None:
        import shlex

        names = sorted(k for k in env if k.startswith("AIRFLOW"))
        lines = [f"export {name}={shlex.quote(env[name])}" for name in [*names, "FLATCAR_AIRFLOW_CONFIG"]]
        lines.insert(0, f'export PATH={shlex.quote(str(self.venv_bin))}:"$PATH"')
        self.home.env_file.write_text(
            "# source this file to use the airflow command on the quickstart\n" + "\n".join(lines) + "\n"
        )

    def _run(self, cmd: list[str], env: dict[str, str], timeout: float = 600) -> str:
        proc = subprocess.run(
            cmd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout
        )
        if proc.returncode != 0:
            raise QuickstartError(
                f"{' '.join(cmd[-3:])} failed ({proc.returncode}): {proc.stderr.strip()[-1500:]}"
            )
        return proc.stdout

    def _airflow(self, env: dict[str, str], *args: str) -> str:
        return self._run([str(self.venv_bin / "airflow"), *args], env)

    def _start_airflow(self, env: dict[str, str], ports: dict) -> None:
        from .processes import start_service

        airflow = str(self.venv_bin / "airflow")
        for name in SERVICES:
            cmd = [airflow, name]
            if name == "api-server":
                cmd += ["--port", str(ports["api"]), "--host", ports["host"]]
            self.services.append(start_service(name, cmd, env, self.home.logs))
            pids = [s.pid for s in self.services] + self.cache.pids
            self.home.write_state({**self.home.read_state(), "pids": pids})
        _say(f"started Airflow ({', '.join(SERVICES)}); logs in {self.home.logs}")

    def _check_services(self) -> None:
        for service in self.services:
            if not service.alive():
                raise QuickstartError(
                    f"airflow {service.name} exited ({service.proc.returncode}); the end of {service.log}:\n"
                    + service.tail()
                )

    def _wait(self, condition, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while True:
            self._check_services()
            result = condition()
            if result:
                return result
            if time.monotonic() > deadline:
                raise QuickstartError(f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(1)

    def _api(self, ports: dict):
        import httpx

        base = f"http://127.0.0.1:{ports['api']}" if ports["host"] in ("0.0.0.0", "::") else ports["url"]  # noqa: S104

        def healthy():
            try:
                return httpx.get(f"{base}/api/v2/monitor/health", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        self._wait(healthy, 240, "the API server to answer")
        self._wait(self.home.password_file.exists, 60, "the admin password file")
        password = json.loads(self.home.password_file.read_text())["admin"]
        token = httpx.post(f"{base}/auth/token", json={"username": "admin", "password": password}, timeout=30)
        token.raise_for_status()
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        return httpx.Client(base_url=base, headers=headers, timeout=30)

    def _wait_for_dags(self, api, config: Path) -> list[str]:
        from flatcar_airflow.config import load_config
        from flatcar_airflow.pipelines import FULL_DAG_ID, os_dag_id

        loaded = load_config(config)
        wanted = ([FULL_DAG_ID] if loaded.full.enabled else []) + [os_dag_id(b) for b in loaded.os.branches]

        def parsed():
            response = api.get("/api/v2/dags", params={"limit": 100})
            if response.status_code != 200:
                return False
            have = {dag["dag_id"] for dag in response.json()["dags"]}
            if set(wanted) <= have:
                return True
            errors = api.get("/api/v2/importErrors").json().get("import_errors", [])
            if errors:
                raise QuickstartError(
                    f"the DAG file does not load: {errors[0]['stack_trace'].strip()[-1500:]}"
                )
            return False

        self._wait(parsed, 300, f"the DAGs {', '.join(wanted)} to be parsed")
        return wanted

    def _banner(self, ports: dict, dag_ids: list[str], run_url: str | None, config: Path) -> None:
        lines = [
            "",
            "flatcar-airflow is running.",
            f"  UI and REST API  {ports['url']}/",
            f"  builds page      {ports['url']}/flatcar/",
            f"  login            admin, password in {self.home.password_file}",
            f"  DAGs             {', '.join(dag_ids)}",
            f"  configuration    {config}",
            f"  build cache      https://{self.cache.settings().server}/ (files in {self.cache.data})",
            f"  airflow command  source {self.home.env_file}",
        ]
        if run_url:
            lines.append(f"  demo build       {run_url}")
        lines += ["  stop             Ctrl-C, or: bash scripts/quickstart.sh stop", ""]
        print("\n".join(lines), flush=True)

    def _watch(self) -> int:
        while True:
            self._check_services()
            if self.cache and len(self.cache.pids) < 2:
                raise QuickstartError(f"the build cache stopped; see {self.home.buildcache / 'log'}")
            time.sleep(2)

    def _shutdown(self) -> None:
        from .processes import stop_trees

        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if self.services:
            _say("stopping Airflow (running steps get their cleanup)")
            stop_trees([s.pid for s in self.services], grace=60)
            for service in self.services:
                with contextlib.suppress(Exception):
                    service.proc.wait(timeout=5)
        if self.cache is not None:
            self.cache.stop()
        state = self.home.read_state()
        if state.pop("pids", None) is not None:
            self.home.write_state(state)
        if self.services or self.cache is not None:
            _say("stopped")


def _demo_config(home: Home) -> str:
    """The demo profile's configuration: the miniature origin, the local runner, no schedules."""
    import yaml

    data = {
        "scripts_repo": str(home.demo_origin),
        "buildcache_conn_id": DEMO_CONN_ID,
        "runner": {"type": "local", "root": str(home.build_root)},
        "tagging_cache": str(home.root / "tagging-cache"),
        "arches": {
            "amd64": {"formats": ["qemu_uefi", "pxe"], "test_vendors": ["qemu_uefi"]},
            "arm64": {"formats": ["qemu_uefi"], "test_vendors": ["qemu_uefi"]},
        },
        # No schedule: unpausing the demo DAG starts no catch-up run; builds are triggered by hand.
        "full": {"enabled": True, "branch": "main", "schedule": None, "arches": ["amd64", "arm64"]},
        "os": {"branches": [], "schedule": None},
        "heartbeat_interval": 30,
        "retries": 0,
        # The miniature scripts need a few MB and no internet: check the host for that.
        "preflight": {"min_free_gb": 1, "network": "off"},
    }
    header = "# The quickstart's demo profile (rewritten at every start): the miniature scripts repository.\n"
    return header + yaml.safe_dump(data, sort_keys=False)
