"""The quickstart for real: ``bash scripts/quickstart.sh`` as a new user runs it, on free ports.

It must come up with a healthy API, run the demo full build it triggers itself to success (artifacts and
a manifest in the build cache, read over HTTPS as a user would), stop everything it started (no process,
no port held), and on a second start show the earlier run, its logs and the same cache and keys.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

import httpx
import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "scripts" / "quickstart.sh"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_free(address: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError:
            return False
    return True


class Quickstart:
    def __init__(self, home: Path, port: int) -> None:
        self.home, self.port = home, port
        self.env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("AIRFLOW", "FLATCAR_AIRFLOW"))
        }
        self.env["FLATCAR_AIRFLOW_HOME"] = str(home)
        self.proc: subprocess.Popen | None = None
        self.output = home.parent / "quickstart.out"
        self.mark = 0
        self.docker_tag = ""

    def start(self, *args: str) -> None:
        self.mark = len(self.output.read_text(errors="replace")) if self.output.exists() else 0
        with self.output.open("ab") as out:
            self.proc = subprocess.Popen(
                ["bash", str(QUICKSTART), "--port", str(self.port), *args],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def said(self) -> str:
        """What the latest start printed."""
        return self.output.read_text(errors="replace")[self.mark :]

    def wait_for(self, pattern: str, timeout: float = 420) -> re.Match:
        deadline = time.monotonic() + timeout
        while True:
            found = list(re.finditer(pattern, self.said()))
            if found:
                return found[-1]
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"the quickstart exited ({self.proc.returncode}):\n{self.said()[-4000:]}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {pattern!r}:\n{self.said()[-4000:]}")
            time.sleep(1)

    def stop(self) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            ["bash", str(QUICKSTART), "stop"], env=self.env, capture_output=True, text=True, timeout=300
        )
        self.proc.wait(timeout=60)
        return proc

    def kill(self) -> None:
        """Whatever the test left running: stopped as a user would, then killed."""
        subprocess.run(["bash", str(QUICKSTART), "stop"], env=self.env, capture_output=True, timeout=300)
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        for line in self.processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(line.split()[0]), signal.SIGKILL)
        if self.docker_tag:
            images = subprocess.run(
                ["docker", "images", "--format", "{{.Repository}}:{{.Tag}}"], capture_output=True, text=True
            ).stdout.split()
            built = [image for image in images if image.endswith(f":{self.docker_tag}")]
            if built:
                subprocess.run(["docker", "image", "rm", *built], capture_output=True)

    def api(self) -> httpx.Client:
        base = f"http://127.0.0.1:{self.port}"
        password = json.loads(
            (self.home / "airflow/simple_auth_manager_passwords.json.generated").read_text()
        )
        token = httpx.post(f"{base}/auth/token", json={"username": "admin", "password": password["admin"]})
        token.raise_for_status()
        return httpx.Client(
            base_url=f"{base}/api/v2",
            headers={"Authorization": f"Bearer {token.json()['access_token']}"},
            timeout=30,
        )

    def processes(self) -> list[str]:
        """Processes that belong to this quickstart: its state directory on their command line or env."""
        mine = []
        for proc in psutil.process_iter(["pid", "cmdline"]):
            try:
                cmdline = " ".join(proc.info["cmdline"] or [])
                environ = proc.environ() if str(self.home) not in cmdline else {}
            except psutil.Error:
                continue
            if str(self.home) in cmdline or environ.get("FLATCAR_AIRFLOW_HOME") == str(self.home):
                mine.append(f"{proc.pid} {cmdline}")
        return mine


def _https(url: str, ca: Path) -> bytes:
    context = ssl.create_default_context(cafile=str(ca))
    with urllib.request.urlopen(url, context=context, timeout=30) as response:  # noqa: S310
        return response.read()


@pytest.fixture
def quickstart(tmp_path, docker_engine):
    qs = Quickstart(tmp_path / "home", _free_port())
    yield qs
    qs.kill()


@pytest.mark.timeout(1500)
def test_quickstart_runs_the_demo_build_stops_cleanly_and_restarts_with_its_state(quickstart):
    quickstart.start()
    run_url = quickstart.wait_for(r"demo build\s+(http://\S+)").group(1)
    assert run_url.startswith(f"http://127.0.0.1:{quickstart.port}/dags/flatcar_full/runs/")
    said = quickstart.said()
    assert f"UI and REST API  http://127.0.0.1:{quickstart.port}/" in said
    assert "login            admin, password in" in said and "bash scripts/quickstart.sh stop" in said
    api = quickstart.api()
    assert api.get("/monitor/health").status_code == 200
    run_id = run_url.rsplit("/", 1)[1]

    deadline = time.monotonic() + 600
    while (state := api.get(f"/dags/flatcar_full/dagRuns/{run_id}").json()["state"]) not in (
        "success",
        "failed",
    ):
        assert time.monotonic() < deadline, "the demo build did not finish in 10 minutes"
        assert quickstart.proc.poll() is None, quickstart.said()[-3000:]
        time.sleep(3)
    tis = api.get(f"/dags/flatcar_full/dagRuns/{run_id}/taskInstances", params={"limit": 100}).json()
    states = {ti["task_id"]: ti["state"] for ti in tis["task_instances"]}
    assert state == "success", states
    assert {states[f"{arch}.test_qemu_uefi"] for arch in ("amd64", "arm64")} == {"success"}

    # What the build produced, read from the build cache over HTTPS with the cache's own CA.
    settings = json.loads((quickstart.home / "buildcache/settings.json").read_text())
    ca = quickstart.home / "buildcache/tls/ca.pem"
    summary = api.get(f"/dags/flatcar_full/dagRuns/{run_id}/taskInstances/summary/xcomEntries/return_value")
    manifest_value = summary.json()["value"]
    manifest_value = json.loads(manifest_value) if isinstance(manifest_value, str) else manifest_value
    version = manifest_value["versionfile"]["FLATCAR_VERSION"]
    quickstart.docker_tag = version.replace("+", "-")  # its SDK and packages images, removed afterwards
    base = f"https://{settings['server']}/images/amd64/{version}"
    manifest = json.loads(_https(f"{base}/flatcar-airflow-manifest.json", ca))
    assert manifest["state"] == "success" and manifest["run_id"] == run_id
    for arch in ("amd64", "arm64"):
        image = manifest["arches"][arch]["image"]["artifacts"]
        assert image, manifest["arches"][arch]
    assert _https(f"{base}/flatcar_production_image.bin.bz2", ca)[:3] == b"BZh"
    # The builds page of the quickstart's api-server lists it (docs/builds-page.md).
    assert f"builds page      http://127.0.0.1:{quickstart.port}/flatcar/" in said
    builds = api.get(f"http://127.0.0.1:{quickstart.port}/flatcar/api/builds").json()["builds"]
    assert [(b["version_tag"], b["state"], b["run_id"]) for b in builds] == [
        (manifest["version"], "success", run_id)
    ]
    writer_key = hashlib.sha256((quickstart.home / "buildcache/ssh/writer_ed25519").read_bytes()).hexdigest()
    ports = json.loads((quickstart.home / "quickstart.json").read_text())["ports"]

    # A second quickstart on the same state is refused while this one runs.
    other = subprocess.run(
        ["bash", str(QUICKSTART), "--port", str(_free_port())],
        env=quickstart.env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert other.returncode == 1 and "already running" in other.stderr, other.stderr
    assert quickstart.proc.poll() is None

    # Stop: nothing of it is left, no port is held.
    stopped = quickstart.stop()
    assert stopped.returncode == 0, stopped.stderr
    assert quickstart.proc.returncode == 0, quickstart.said()[-2000:]
    assert quickstart.processes() == []
    assert _port_free("127.0.0.1", quickstart.port)
    assert _port_free(settings["server"], 443) and _port_free(settings["server"], settings["ssh_port"])
    assert _port_free("0.0.0.0", ports["worker_logs"])  # noqa: S104
    status = subprocess.run(
        [str(ROOT / ".venv/bin/flatcar-airflow"), "quickstart", "status"],
        env=quickstart.env,
        capture_output=True,
        text=True,
    )
    assert status.returncode == 3 and json.loads(status.stdout)["running"] is False

    # A second start reuses the state: the run, its logs, the cache and the keys.
    quickstart.start()
    quickstart.wait_for(r"flatcar-airflow is running\.(?s:.*)stop\s+Ctrl-C")
    assert "demo build  " not in quickstart.said()  # no second demo build
    api = quickstart.api()
    runs = api.get("/dags/flatcar_full/dagRuns").json()["dag_runs"]
    assert [(r["dag_run_id"], r["state"]) for r in runs] == [(run_id, "success")]
    log = api.get(f"/dags/flatcar_full/dagRuns/{run_id}/taskInstances/amd64.image/logs/1")
    assert log.status_code == 200 and "image finished in" in log.text and "12 artifact(s)" in log.text
    assert json.loads(_https(f"{base}/flatcar-airflow-manifest.json", ca))["run_id"] == run_id
    again = hashlib.sha256((quickstart.home / "buildcache/ssh/writer_ed25519").read_bytes()).hexdigest()
    assert again == writer_key

    # Ctrl-C in the terminal stops it as well.
    os.killpg(quickstart.proc.pid, signal.SIGINT)
    assert quickstart.proc.wait(timeout=120) == 0
    assert quickstart.processes() == []
    assert _port_free("127.0.0.1", quickstart.port)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--config", "{bad}"], "full.schedule: 'every night' is not a five-field cron expression"),
        (["--config", "{missing}"], "cannot be read"),
        (["--port", "{busy}"], "is in use: give another with --port"),
    ],
)
def test_bad_input_is_refused_before_anything_starts(tmp_path, args, message):
    bad = tmp_path / "bad.yaml"
    bad.write_text("scripts_repo: https://example.org/scripts.git\nfull: {schedule: every night}\n")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        values = {"bad": bad, "missing": tmp_path / "missing.yaml", "busy": busy.getsockname()[1]}
        home = tmp_path / "home"
        proc = subprocess.run(
            [str(ROOT / ".venv/bin/flatcar-airflow"), "quickstart", "--home", str(home)]
            + [arg.format(**values) for arg in args],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert proc.returncode == 1
    assert proc.stderr.startswith("quickstart: ") and message in proc.stderr, proc.stderr
    assert sorted(p.name for p in home.iterdir()) == ["quickstart.lock"]  # nothing was made or started
