"""docker-compose.airflow.yml: the file as docker-compose 1.29 reads it, and the whole stack for real.

``test_the_file_*`` only run ``docker-compose config`` (seconds, no image). The ``compose`` test
(``-m 'not compose'`` deselects it) builds every image locally (tests/compose_images.py: stand-ins for
the upstream bases, then the project's Dockerfiles), brings the stack up under a project name of its own,
runs the demo full build through the REST API (runner containers on the stack's network, the build cache
container as BUILDCACHE_SERVER), reads the artifacts and the manifest from the cache over HTTPS, and
takes the stack down again: no container, network or volume of it may be left.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import httpx
import pytest
import yaml
from compose_images import build_compose_images
from infra import docker_containers

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.airflow.yml"
EXAMPLE_ENV = ROOT / "docker" / "compose.env.example"
SECRETS = ("POSTGRES_PASSWORD", "AIRFLOW_FERNET_KEY", "AIRFLOW_JWT_SECRET", "AIRFLOW_API_SECRET_KEY")
SERVICES = {
    "postgres",
    "redis",
    "buildcache",
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
}
DAG_ID = "flatcar_full"


def _docker_compose() -> str:
    found = shutil.which("docker-compose")
    if found is None:
        pytest.fail(
            "docker-compose is not installed (Debian package docker-compose; run-tests.sh installs it)"
        )
    return found


def _example_names() -> list[str]:
    return re.findall(r"^([A-Z][A-Z0-9_]*)=", EXAMPLE_ENV.read_text(), re.MULTILINE)


def _clean_env() -> dict[str, str]:
    """This process's environment without any of the stack's variables (they would win over the file)."""
    names = set(_example_names())
    return {key: value for key, value in os.environ.items() if key not in names}


def _secrets() -> dict[str, str]:
    import base64

    return {
        "POSTGRES_PASSWORD": secrets.token_hex(16),
        "AIRFLOW_FERNET_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
        "AIRFLOW_JWT_SECRET": secrets.token_hex(32),
        "AIRFLOW_API_SECRET_KEY": secrets.token_hex(32),
        "AIRFLOW_ADMIN_PASSWORD": secrets.token_urlsafe(18),
    }


def _env_file(path: Path, values: dict[str, str]) -> Path:
    """The example env file with ``values`` filled in (every other line as shipped)."""
    lines = []
    for line in EXAMPLE_ENV.read_text().splitlines():
        name = line.partition("=")[0]
        lines.append(f"{name}={values[name]}" if name in values and "=" in line else line)
    lines += [f"{name}={value}" for name, value in values.items() if name not in _example_names()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _config(env_file: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [_docker_compose(), "-f", str(COMPOSE_FILE), "--env-file", str(env_file), "config"],
        capture_output=True,
        text=True,
        env=env or _clean_env(),
        timeout=60,
        cwd=ROOT,
    )


# -- the file ----------------------------------------------------------------------------------------------


def test_the_file_refuses_to_run_without_the_secrets():
    proc = _config(EXAMPLE_ENV)
    assert proc.returncode != 0
    assert re.search(r"set (POSTGRES_PASSWORD|AIRFLOW_\w+) in the env file", proc.stderr), proc.stderr[-2000:]


def test_the_file_with_the_example_env_names_upstream_images_and_wires_the_stack(tmp_path):
    proc = _config(_env_file(tmp_path / "compose.env", _secrets()))
    assert proc.returncode == 0, proc.stderr
    config = yaml.safe_load(proc.stdout)
    services = config["services"]
    assert set(services) == SERVICES | {"flatcar-runner"}
    assert services["flatcar-runner"]["profiles"] == ["runner-image"]

    # Upstream images and bases by default; the images this project builds have build sections.
    assert services["postgres"]["image"] == "postgres:16"
    assert services["redis"]["image"] == "redis:7.2-bookworm"
    init = services["airflow-init"]
    assert init["build"]["args"] == {"AIRFLOW_BASE": "apache/airflow:3.3.2-python3.11"}
    assert init["build"]["dockerfile"] == "docker/airflow/Dockerfile"
    assert services["buildcache"]["build"]["args"] == {"BASE": "debian:bookworm-slim"}
    assert services["flatcar-runner"]["build"]["args"] == {"BASE": "debian:bookworm-slim"}
    airflow_services = {name for name in SERVICES if name.startswith("airflow-")}
    assert {services[name]["image"] for name in airflow_services} == {"flatcar-airflow:0.1.0"}

    # Health: every long-running service has a check; the Airflow services wait for init and the
    # database; init waits for the build cache it reads the connection from.
    for name in SERVICES - {"airflow-init"}:
        assert services[name]["healthcheck"]["test"], name
    for name in airflow_services - {"airflow-init"}:
        assert services[name]["depends_on"]["airflow-init"] == {
            "condition": "service_completed_successfully"
        }, name
        assert services[name]["depends_on"]["postgres"] == {"condition": "service_healthy"}, name
    assert init["depends_on"]["buildcache"] == {"condition": "service_healthy"}
    assert services["airflow-worker"]["depends_on"]["airflow-apiserver"] == {"condition": "service_healthy"}

    # The network the runner containers join by name, where the cache answers to BUILDCACHE_SERVER.
    assert config["networks"]["default"]["name"] == "flatcar-airflow"
    assert services["buildcache"]["networks"]["default"]["aliases"] == ["buildcache"]
    assert init["environment"]["FLATCAR_NETWORK"] == "flatcar-airflow"

    # The worker: docker socket, the build root at the same path, the socket's group, every demo queue.
    worker = services["airflow-worker"]
    volumes = {volume.split(":")[0]: volume for volume in worker["volumes"]}
    assert "/var/run/docker.sock" in volumes
    assert volumes["/var/lib/flatcar-airflow"].startswith("/var/lib/flatcar-airflow:/var/lib/flatcar-airflow")
    assert worker["group_add"] == ["999"]
    assert worker["command"].endswith("--queues default,amd64,arm64")

    # Secrets come from the env file only; nothing of the repository is bind-mounted at run time.
    for name in airflow_services:
        environment = services[name]["environment"]
        assert environment["AIRFLOW__CORE__FERNET_KEY"] not in ("", None), name
        for volume in services[name].get("volumes", []):
            assert not volume.startswith(str(ROOT)), (name, volume)
    assert {volume for volume in config["volumes"]} == {
        "postgres-db",
        "airflow-logs",
        "airflow-auth",
        "buildcache-state",
    }


def test_the_file_takes_the_image_names_and_ports_from_the_env_file(tmp_path):
    values = {
        **_secrets(),
        "FLATCAR_AIRFLOW_IMAGE": "example.org/flatcar-airflow:9",
        "POSTGRES_IMAGE": "example.org/postgres:15",
        "AIRFLOW_API_PUBLISH": "127.0.0.1:18080",
        "FLATCAR_NETWORK": "fa-other",
        "FLATCAR_ROOT": "/srv/flatcar",
        "BUILDCACHE_SERVER": "cache.example.org",
    }
    proc = _config(_env_file(tmp_path / "compose.env", values))
    assert proc.returncode == 0, proc.stderr
    config = yaml.safe_load(proc.stdout)
    services = config["services"]
    assert services["airflow-scheduler"]["image"] == "example.org/flatcar-airflow:9"
    assert services["postgres"]["image"] == "example.org/postgres:15"
    assert services["airflow-apiserver"]["ports"] in (["127.0.0.1:18080:8080/tcp"], ["127.0.0.1:18080:8080"])
    assert config["networks"]["default"]["name"] == "fa-other"
    assert "/srv/flatcar:/srv/flatcar:rw" in services["airflow-worker"]["volumes"]
    assert services["airflow-worker"]["environment"]["FLATCAR_AIRFLOW_CONFIG"] == "/srv/flatcar/config.yaml"
    assert services["buildcache"]["networks"]["default"]["aliases"] == ["cache.example.org"]


def test_the_build_context_holds_what_the_dockerfiles_copy():
    from compose_images import _context_files

    context = {str(path.relative_to(ROOT)) for path in _context_files(ROOT, ROOT / ".dockerignore")}
    for dockerfile in ("docker/airflow/Dockerfile", "docker/buildcache/Dockerfile"):
        for line in (ROOT / dockerfile).read_text().splitlines():
            if line.startswith("COPY ") and "--from=" not in line:
                sources = [word for word in line.split()[1:-1] if not word.startswith("--")]
                for source in sources:
                    source = source.rstrip("/")
                    assert any(path == source or path.startswith(source + "/") for path in context), (
                        dockerfile,
                        source,
                    )
    assert not any("__pycache__" in path or path.startswith((".venv", ".git/")) for path in context)


# -- the stack for real --------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _log(message: str) -> None:
    sys.stderr.write(f"\n[compose] {message}\n")
    sys.stderr.flush()


class Stack:
    """One docker-compose project of the stack, with its own name, network, ports and build root."""

    def __init__(self, images: dict[str, str], runner_image: str, workdir: Path) -> None:
        self.project = f"fa-compose-{os.getpid()}-{secrets.token_hex(3)}"
        self.root = workdir / "root"
        self.root.mkdir()
        self.api_port, self.https_port, self.ssh_port = _free_port(), _free_port(), _free_port()
        self.values = {
            **_secrets(),
            **images,
            "FLATCAR_RUNNER_IMAGE": runner_image,
            "FLATCAR_ROOT": str(self.root),
            "FLATCAR_NETWORK": self.project,
            "DOCKER_GID": str(os.stat("/var/run/docker.sock").st_gid),
            "AIRFLOW_API_PUBLISH": f"127.0.0.1:{self.api_port}",
            "BUILDCACHE_HTTPS_PUBLISH": f"127.0.0.1:{self.https_port}",
            "BUILDCACHE_SSH_PUBLISH": f"127.0.0.1:{self.ssh_port}",
            "AIRFLOW_WORKER_CONCURRENCY": "6",
            "HEALTHCHECK_INTERVAL": "15s",
        }
        self.env_file = _env_file(workdir / "compose.env", self.values)
        self.docker_tag = ""

    def compose(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [
            _docker_compose(),
            "-p",
            self.project,
            "-f",
            str(COMPOSE_FILE),
            "--env-file",
            str(self.env_file),
            *args,
        ]
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env=_clean_env(), timeout=timeout, cwd=ROOT
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"docker-compose {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}\n"
                f"--- logs ---\n{self.logs()}"
            )
        return proc

    def logs(self, tail: int = 60) -> str:
        proc = subprocess.run(
            [
                _docker_compose(),
                "-p",
                self.project,
                "-f",
                str(COMPOSE_FILE),
                "--env-file",
                str(self.env_file),
                "logs",
                "--no-color",
                "--tail",
                str(tail),
            ],
            capture_output=True,
            text=True,
            env=_clean_env(),
            timeout=120,
            cwd=ROOT,
        )
        return proc.stdout[-12000:]

    def containers(self) -> dict[str, dict]:
        """Service → docker inspect of its container (every container of the project, stopped too)."""
        ids = _docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={self.project}").split()
        if not ids:
            return {}
        found = json.loads(_docker("inspect", *ids))
        return {c["Config"]["Labels"]["com.docker.compose.service"]: c for c in found}

    def health(self) -> dict[str, str]:
        states = {}
        for service, container in self.containers().items():
            state = container["State"]
            states[service] = state.get("Health", {}).get("Status") or (
                f"{state['Status']} ({state['ExitCode']})"
            )
        return states

    def leftovers(self) -> dict[str, list[str]]:
        label = f"label=com.docker.compose.project={self.project}"
        return {
            "containers": _docker("ps", "-aq", "--filter", label).split(),
            "networks": sorted(
                set(_docker("network", "ls", "-q", "--filter", label).split())
                | set(_docker("network", "ls", "-q", "--filter", f"name=^{self.project}$").split())
            ),
            "volumes": _docker("volume", "ls", "-q", "--filter", label).split(),
        }

    def api(self) -> httpx.Client:
        base = f"http://127.0.0.1:{self.api_port}"
        token = httpx.post(
            f"{base}/auth/token",
            json={"username": "admin", "password": self.values["AIRFLOW_ADMIN_PASSWORD"]},
            timeout=30,
        )
        token.raise_for_status()
        return httpx.Client(
            base_url=f"{base}/api/v2",
            headers={"Authorization": f"Bearer {token.json()['access_token']}"},
            timeout=30,
        )


def _docker(*args: str) -> str:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"docker {' '.join(args)}: {proc.stderr}"
    return proc.stdout


def _wait(condition, timeout: float, what: str, stack: Stack, interval: float = 3):
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{stack.logs()}")
        time.sleep(interval)


@pytest.fixture(scope="session")
def compose_images():
    images = build_compose_images()
    _log(f"images ready in {images.seconds:.0f} s (built: {', '.join(images.built) or 'none, all cached'})")
    return images


@pytest.fixture
def stack(compose_images, docker_engine, runner_image):
    # The docker lock (docker_engine) is taken after the image builds: the stack's step containers and
    # images have the names other test sessions' steps use.
    workdir = Path(tempfile.mkdtemp(prefix="fa-compose-", dir="/tmp"))
    stack = Stack(dict(compose_images), runner_image, workdir)
    stack.flatcar_before = set(docker_containers("flatcar-"))
    try:
        yield stack
    finally:
        if any(stack.leftovers().values()):
            stack.compose("down", "-v", "--remove-orphans", "--timeout", "30", timeout=300, check=False)
        if stack.docker_tag:  # the SDK and packages images of the demo build's version
            images = _docker("images", "--format", "{{.Repository}}:{{.Tag}}").split()
            made = [image for image in images if image.endswith(f":{stack.docker_tag}")]
            if made:
                subprocess.run(["docker", "image", "rm", *made], capture_output=True, check=False)
        shutil.rmtree(workdir, ignore_errors=True)


def _task_log(api: httpx.Client, run_id: str, task_id: str, attempt: int = 1) -> str:
    """A task attempt's log as text (the API answers JSON: one entry per log event)."""
    response = api.get(f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{attempt}")
    if response.status_code != 200:
        return f"(no log: {response.status_code} {response.text[:200]})"
    lines = []
    for entry in response.json().get("content", []):
        if isinstance(entry, dict):
            lines.append(" ".join(str(entry.get(key, "")) for key in ("level", "event") if entry.get(key)))
        else:
            lines.append(str(entry))
    return "\n".join(lines)


def _xcom(api: httpx.Client, run_id: str, task_id: str):
    response = api.get(f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value")
    response.raise_for_status()
    value = response.json()["value"]
    return json.loads(value) if isinstance(value, str) else value


def _https(url: str, ca: Path) -> bytes:
    context = ssl.create_default_context(cafile=str(ca))
    with urllib.request.urlopen(url, context=context, timeout=30) as response:  # noqa: S310
        return response.read()


@pytest.mark.compose
@pytest.mark.timeout(3000)
def test_the_stack_comes_up_runs_the_demo_build_and_goes_down_without_a_trace(stack):
    started = time.monotonic()
    stack.compose("up", "-d", "--no-build", timeout=900)
    _log(f"up -d returned after {time.monotonic() - started:.0f} s")
    init = stack.containers()["airflow-init"]["State"]
    assert (init["Status"], init["ExitCode"]) == ("exited", 0), stack.logs()
    long_running = SERVICES - {"airflow-init"}

    def healthy():
        restarting = {
            name: container["RestartCount"]
            for name, container in stack.containers().items()
            if container["RestartCount"] > 1
        }
        assert not restarting, f"services restart: {restarting}\n{stack.logs()}"
        health = stack.health()
        return set(health) >= long_running and all(health[name] == "healthy" for name in long_running)

    _wait(healthy, 420, "every service to be healthy", stack)
    _log(f"healthy after {time.monotonic() - started:.0f} s: {stack.health()}")

    api = stack.api()
    assert api.get("/monitor/health").json()["metadatabase"]["status"] == "healthy"

    def parsed():
        if api.get(f"/dags/{DAG_ID}").status_code == 200:
            return True
        errors = api.get("/importErrors").json().get("import_errors", [])
        assert not errors, errors[0]["stack_trace"][-2000:]
        return False

    _wait(parsed, 300, f"the DAG {DAG_ID} to be parsed", stack)
    pools = {pool["name"]: pool["slots"] for pool in api.get("/pools").json()["pools"]}
    # The configuration's pools (the default sizes: two steps at once, so the arches' steps upload to the
    # cache concurrently).
    assert pools.get("flatcar_build_steps") == 2 and pools.get("flatcar_tagging") == 1, pools
    connection = api.get("/connections/flatcar_buildcache").json()
    assert (connection["conn_type"], connection["host"], connection["port"]) == (
        "flatcar_buildcache",
        "buildcache",
        2222,
    )

    api.patch(f"/dags/{DAG_ID}", json={"is_paused": False}).raise_for_status()
    triggered = api.post(f"/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": {}})
    triggered.raise_for_status()
    run_id = triggered.json()["dag_run_id"]
    build_started = time.monotonic()

    def finished():
        state = api.get(f"/dags/{DAG_ID}/dagRuns/{run_id}").json()["state"]
        return state if state in ("success", "failed") else None

    state = _wait(finished, 900, "the demo build", stack, interval=5)
    _log(f"demo build {state} in {time.monotonic() - build_started:.0f} s")
    tagged = _xcom(api, run_id, "tag")
    version = tagged["versionfile"]["FLATCAR_VERSION"]
    stack.docker_tag = version.replace("+", "-")
    tis = api.get(f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances", params={"limit": 100}).json()
    placement = {ti["task_id"]: (ti["state"], ti["queue"]) for ti in tis["task_instances"]}
    if state != "success":
        failed = [task for task, (task_state, _) in placement.items() if task_state == "failed"]
        logs = {task: _task_log(api, run_id, task)[-4000:] for task in failed[:2]}
        raise AssertionError(f"the demo build failed: {placement}\n{logs}\n{stack.logs()}")
    # Per-arch steps went to their arch's queue, everything else to the default one.
    for task, (task_state, queue) in placement.items():
        assert task_state in ("success", "skipped"), (task, task_state)
        arch = task.partition(".")[0]
        assert queue == (arch if arch in ("amd64", "arm64") else "default"), (task, queue)
    assert placement["amd64.test_qemu_uefi"][0] == placement["arm64.test_qemu_uefi"][0] == "success"

    # The step ran in a runner container (on the stack's network: it reached the cache by its name).
    log = _task_log(api, run_id, "amd64.image")
    assert f"on docker ({stack.values['FLATCAR_RUNNER_IMAGE']} " in log, log[-3000:]
    assert "[flatcar-airflow] step finished (exit 0)" in log, log[-3000:]

    # The artifacts and the manifest, read from the cache over HTTPS (published port, the cache's CA).
    ca = stack.root.parent / "buildcache-ca.pem"
    ca.write_text(
        stack.compose("exec", "-T", "buildcache", "cat", "/var/lib/flatcar-buildcache/tls/ca.pem").stdout
    )
    assert _xcom(api, run_id, "summary")["versionfile"]["FLATCAR_VERSION"] == version
    for arch in ("amd64", "arm64"):
        base = f"https://localhost:{stack.https_port}/images/{arch}/{version}"
        manifest = json.loads(_https(f"{base}/flatcar-airflow-manifest.json", ca))
        assert manifest["state"] == "success" and manifest["run_id"] == run_id, manifest
        assert manifest["arches"][arch]["image"]["artifacts"], manifest["arches"][arch]
        assert _https(f"{base}/flatcar_production_image.bin.bz2", ca)[:3] == b"BZh"

    # Down: nothing of the project is left, and no step container either.
    stopping = time.monotonic()
    stack.compose("down", "-v", "--remove-orphans", "--timeout", "60", timeout=600)
    _log(f"down -v in {time.monotonic() - stopping:.0f} s; whole test {time.monotonic() - started:.0f} s")
    assert stack.leftovers() == {"containers": [], "networks": [], "volumes": []}
    assert set(docker_containers("flatcar-")) - stack.flatcar_before == set()
