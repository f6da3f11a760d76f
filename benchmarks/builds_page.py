#!/usr/bin/env python3
"""Benchmark: the builds page and its JSON API with 1,000 builds in the indexes (not a test).

What it measures: the server time of the plugin's routes served by a real Airflow 3.3 api-server
(``airflow api-server``, one worker, SQLite, the simple auth manager with a bearer token), reading real
builds indexes over HTTPS from the project's build cache service (``flatcar-airflow buildcache``: nginx,
on a free loopback port), against Airflow's own REST API in the same run as the yardstick:

* ``GET /flatcar/`` (the builds page: 25 builds of 1,000, grouped by branch and channel), filtered by
  branch and state, and its second page;
* ``GET /flatcar/api/builds`` (limit 100 and limit 1000), ``GET /flatcar/api/builds/<tag>`` (entry and
  manifest), ``GET /flatcar/builds/<tag>`` (the build page), ``GET /flatcar/branches/<branch>`` (the
  charts), ``GET /flatcar/badge/<branch>.svg``;
* the baselines ``GET /api/v2/version`` and ``GET /api/v2/dags`` (the pipelines' 10 DAGs, serialized
  with ``airflow dags reserialize``) through the same api-server.

The indexes hold ``--builds`` entries (default 1,000) spread over ``--branches`` branches (default 10:
``main`` with full builds, 9 maintenance branches with OS-only builds; one build in 8 failed on one arch),
made from synthetic manifests shaped like the real ones by ``flatcar_airflow.buildindex.entries``
(``entry_from_manifest``, ``render_index``), exactly as the summary tasks would write them.

Each figure is from ``--repeat`` sequential requests after ``--warmup`` unmeasured ones: the server time
Airflow's own access log records for the request (``duration_us``: the whole ASGI app, auth and
middlewares included), the plugin's own ``Server-Timing: app;dur`` for its routes, and the wall time at
the client. Two phases: ``web.cache_seconds: 10`` (the default: the indexes are kept in memory and
revalidated with their ETag every 10 s) and ``web.cache_seconds: 0`` (every request revalidates each
branch's index with the cache: ten conditional GETs answered 304). The first request after the start
(every index downloaded and parsed) is reported on its own.

    .venv/bin/python benchmarks/builds_page.py [--builds 1000] [--branches 10] [--repeat 40] [--json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flatcar_airflow.buildcache_server import BuildCacheServer, Settings
from flatcar_airflow.buildindex.entries import entry_from_manifest, index_path, render_index

ROOT = Path(__file__).resolve().parent.parent

CONN_ID = "flatcar_buildcache_bench"
ARCHES = ("amd64", "arm64")
OS_ARCH_STEPS = ("packages", "push_packages", "image", "vms", "test_qemu_uefi", "image_changes")
#: Maintenance branches: (branch, channel, FLATCAR_VERSION_ID); the channel follows the minor number.
MAINTENANCE = [
    (f"flatcar-{major}", channel, f"{major}.{minor}.0")
    for major, minor, channel in (
        (4593, 2, "stable"),
        (4628, 1, "beta"),
        (4652, 0, "alpha"),
        (4459, 3, "lts"),
        (4230, 3, "lts"),
        (4081, 3, "lts"),
        (3975, 2, "stable"),
        (3815, 2, "stable"),
        (3760, 2, "stable"),
        (3602, 3, "lts"),
        (3510, 3, "lts"),
    )
]
# More (made-up) maintenance branches for the scale benchmark's 50.
MAINTENANCE += [(f"flatcar-{3500 - 10 * n}", "stable", f"{3500 - 10 * n}.2.0") for n in range(45)]
START = dt.datetime(2026, 12, 1, 21, 0, tzinfo=dt.UTC)
EPOCH = dt.date(2013, 7, 1)


def free_port(address: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


# -- the builds ------------------------------------------------------------------------------------------


def _step(state: str, seconds: float, started: dt.datetime, artifacts=()) -> dict:
    ran = state in ("success", "failed")
    return {
        "state": state,
        "duration_s": round(seconds, 3) if ran else 0.0,
        "started_at": started.isoformat() if ran else None,
        "finished_at": (started + dt.timedelta(seconds=seconds)).isoformat() if ran else None,
        "reused": False if ran else None,
        "artifacts": list(artifacts),
    }


def synthetic_manifest(branch: str, channel: str, version_id: str, day: int, rng: random.Random) -> dict:
    """One nightly's manifest, shaped like the summary task's (docs/pipelines.md), for ``day`` days ago."""
    run_time = START - dt.timedelta(days=day)
    kind = "full" if branch == "main" else "os"
    if kind == "full":
        major = (run_time.date() - EPOCH).days
        version_id = f"{major}.0.0"
    build_id = f"nightly-{run_time:%Y%m%d-%H%M}"
    tag = f"{channel}-{version_id}-{build_id}"
    version = f"{version_id}+{build_id}"
    started = run_time + dt.timedelta(minutes=2)
    failed_arch = rng.choice(ARCHES) if rng.random() < 1 / 8 else None
    clock = started
    steps = {}
    if kind == "full":
        for name in ("sdk_bootstrap", "sdk_container"):
            seconds = rng.uniform(1800, 3600)
            steps[name] = _step("success", seconds, clock)
            clock += dt.timedelta(seconds=seconds)
    else:
        steps["packages_tag"] = _step("success", rng.uniform(20, 60), clock)
    arches, tests = {}, {}
    for arch in ARCHES:
        records, arch_clock, broken = {}, clock, False
        for name in OS_ARCH_STEPS:
            if broken:
                records[name] = _step("upstream_failed", 0, arch_clock)
                continue
            seconds = rng.uniform(300, 5400)
            state = "failed" if arch == failed_arch and name == "image" else "success"
            artifacts = []
            if name == "image" and state == "success":
                artifacts = [
                    {
                        "arch": arch,
                        "kind": "image-file",
                        "path": f"images/{arch}/{version}/{file}",
                        "size": rng.randint(10**6, 10**9),
                        "version": version,
                    }
                    for file in (
                        "flatcar_production_image.bin.bz2",
                        "flatcar_production_image_sysext.squashfs",
                        "flatcar_production_image.vmlinuz",
                        "version.txt",
                        "flatcar_production_image_packages.txt",
                    )
                ]
            records[name] = _step(state, seconds, arch_clock, artifacts)
            arch_clock += dt.timedelta(seconds=seconds)
            broken = state == "failed"
        arches[arch] = records
        if records["test_qemu_uefi"]["state"] == "success":
            flaky = rng.randint(0, 2)
            tests[arch] = {
                "qemu_uefi": {
                    "passed": rng.randint(180, 220),
                    "failed": 0,
                    "skipped": rng.randint(0, 9),
                    "flaky": flaky,
                    "failures": [],
                    "flaky_tests": [f"cl.test.{n}" for n in range(flaky)],
                }
            }
    finished = started + dt.timedelta(hours=rng.uniform(3, 6))
    return {
        "version": tag,
        "versionfile": {
            "FLATCAR_VERSION": version,
            "FLATCAR_VERSION_ID": version_id,
            "FLATCAR_BUILD_ID": build_id,
            "FLATCAR_SDK_VERSION": version if kind == "full" else "4593.0.0",
        },
        "kind": kind,
        "branch": branch,
        "ref": branch,
        "commit": f"{rng.getrandbits(160):040x}",
        "base_commit": f"{rng.getrandbits(160):040x}",
        "dag_id": "flatcar_full" if kind == "full" else f"flatcar_os_{branch.replace('-', '_')}",
        "run_id": f"scheduled__{run_time.isoformat()}",
        "run_type": "scheduled",
        "run_time": run_time.isoformat(),
        "started_at": started.isoformat(),
        "finished_at": finished.isoformat(),
        "state": "failed" if failed_arch else "success",
        "tag": {"action": "created", "message": f"created tag {tag}", "state": "success"},
        "steps": steps,
        "arches": arches,
        "tests": tests,
    }


def write_indexes(data: Path, builds: int, branches: list[tuple[str, str, str]], seed: int) -> dict:
    """Each branch's index (and each branch's newest manifest) into the cache; returns what was written."""
    rng = random.Random(seed)  # noqa: S311 (reproducible test data, not cryptography)
    per_branch = [
        builds // len(branches) + (1 if n < builds % len(branches) else 0) for n in range(len(branches))
    ]
    written = {"entries": 0, "bytes": 0, "newest": {}}
    for (branch, channel, version_id), count in zip(branches, per_branch, strict=True):
        entries = []
        for day in range(count):
            manifest = synthetic_manifest(branch, channel, version_id, day, rng)
            version = manifest["versionfile"]["FLATCAR_VERSION"]
            paths = [f"images/{arch}/{version}/flatcar-airflow-manifest.json" for arch in ARCHES]
            entries.append(entry_from_manifest(manifest, paths))
            if day == 0:
                written["newest"][branch] = manifest["version"]
                for path in paths:
                    (data / path).parent.mkdir(parents=True, exist_ok=True)
                    (data / path).write_text(json.dumps(manifest, sort_keys=True))
        text = render_index(branch, entries, dt.datetime.now(dt.UTC))
        target = data / index_path(branch)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(text)
        written["entries"] += len(entries)
        written["bytes"] += len(text)
    return written


# -- Airflow ---------------------------------------------------------------------------------------------


class ApiServer:
    def __init__(self, home: Path, config: Path, connection: dict) -> None:
        self.home = home
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = home / "api-server.log"
        self.env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', os.defpath)}",
            "AIRFLOW_HOME": str(home),
            "FLATCAR_AIRFLOW_CONFIG": str(config),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__BASE_URL": self.base,
            f"AIRFLOW_CONN_{CONN_ID.upper()}": json.dumps(connection),
        }
        self.proc: subprocess.Popen | None = None

    def airflow(self, *args: str) -> None:
        airflow = str(Path(sys.executable).parent / "airflow")
        proc = subprocess.run([airflow, *args], env=self.env, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"airflow {' '.join(args)}: {proc.stderr[-3000:]}")

    def start(self) -> None:
        airflow = str(Path(sys.executable).parent / "airflow")
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [airflow, "api-server"],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{self.base}/api/v2/monitor/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the api-server did not come up:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.5)

    def token(self) -> str:
        passwords = json.loads((self.home / "simple_auth_manager_passwords.json.generated").read_text())
        response = httpx.post(
            f"{self.base}/auth/token", json={"username": "admin", "password": passwords["admin"]}, timeout=30
        )
        response.raise_for_status()
        return response.json()["access_token"]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def access_durations(self, start: int) -> list[tuple[str, float]]:
        """(path?query, server ms) of the access log lines after byte ``start``, in order."""
        text = self.log.read_bytes()[start:].decode(errors="replace")
        found = []
        for line in text.splitlines():
            if "request finished" not in line:
                continue
            duration = re.search(r"duration_us=(\d+)", line)
            path = re.search(r" path=(\S+)", line)
            query = re.search(r" query=(\S*)", line)
            if duration and path:
                target = path.group(1) + (f"?{query.group(1)}" if query and query.group(1) else "")
                found.append((target, int(duration.group(1)) / 1000))
        return found


# -- measuring -------------------------------------------------------------------------------------------


def measure(server: ApiServer, client: httpx.Client, url: str, warmup: int, repeat: int) -> dict:
    for _ in range(warmup):
        assert client.get(url).status_code == 200, url
    mark = server.log.stat().st_size
    wall, app = [], []
    size = 0
    for _ in range(repeat):
        started = time.perf_counter()
        response = client.get(url)
        wall.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, (url, response.status_code, response.text[:300])
        size = len(response.content)
        timing = re.search(r"app;dur=([\d.]+)", response.headers.get("server-timing", ""))
        if timing:
            app.append(float(timing.group(1)))
    time.sleep(0.5)  # the access log line is written after the answer
    path = url.split("?")[0]
    server_ms = [ms for target, ms in server.access_durations(mark) if target.split("?")[0] == path]
    return {
        "url": url,
        "bytes": size,
        "server_ms": _stats(server_ms[-repeat:]),
        "app_ms": _stats(app) if app else None,
        "wall_ms": _stats(wall),
    }


def _stats(values: list[float]) -> dict | None:
    if not values:
        return None
    ordered = sorted(values)
    return {
        "median": round(statistics.median(ordered), 1),
        "p90": round(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))], 1),
        "min": round(ordered[0], 1),
        "n": len(ordered),
    }


def endpoints(written: dict, branches: list[str]) -> list[tuple[str, str]]:
    main, other = branches[0], branches[1]
    newest = written["newest"][other]
    return [
        ("baseline: Airflow /api/v2/version", "/api/v2/version"),
        ("baseline: Airflow /api/v2/dags (10 DAGs)", "/api/v2/dags?limit=100"),
        (f"builds page /flatcar/ (page 1 of {written['entries']:,} builds)", "/flatcar/"),
        ("builds page, page 2", "/flatcar/?page=2"),
        (f"builds page, branch={other}&state=failed", f"/flatcar/?branch={other}&state=failed"),
        ("API /flatcar/api/builds (limit 100)", "/flatcar/api/builds?limit=100"),
        ("API /flatcar/api/builds?limit=1000", "/flatcar/api/builds?limit=1000"),
        ("API /flatcar/api/builds/<tag>", f"/flatcar/api/builds/{newest}"),
        ("build page /flatcar/builds/<tag>", f"/flatcar/builds/{newest}"),
        (f"trends /flatcar/branches/{main}", f"/flatcar/branches/{main}"),
        ("badge /flatcar/badge/<branch>.svg", f"/flatcar/badge/{other}.svg"),
    ]


def write_config(path: Path, branches: list[str], cache_seconds: float) -> None:
    path.write_text(
        yaml.safe_dump(
            {
                "scripts_repo": "https://github.com/flatcar/scripts.git",
                "buildcache_conn_id": CONN_ID,
                "full": {"enabled": True, "branch": branches[0], "schedule": None},
                "os": {"branches": branches[1:], "schedule": None},
                "web": {"cache_seconds": cache_seconds},
            }
        )
    )


def machine() -> str:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory = int(Path("/proc/meminfo").read_text().split()[1]) // (1024 * 1024)
    import airflow

    return (
        f"{os.cpu_count()} CPUs ({cpu}), {memory} GiB, Linux {platform.release()}, "
        f"Python {platform.python_version()}, Airflow {airflow.__version__}"
    )


def collect(
    builds: int = 1000,
    branch_count: int = 10,
    repeat: int = 40,
    warmup: int = 5,
    seed: int = 1,
    phases: tuple[float, ...] = (10, 0),
) -> dict:
    """Start the cache and an api-server, measure every route in each ``web.cache_seconds`` phase."""
    if not 2 <= branch_count <= len(MAINTENANCE) + 1:
        raise ValueError(f"branches must be 2 to {len(MAINTENANCE) + 1}")
    work = Path(tempfile.mkdtemp(prefix="flatcar-bench-builds-page-"))
    service = BuildCacheServer(work / "buildcache")
    server = None
    try:
        service.init(Settings(server="127.0.0.1", ssh_port=free_port(), https_port=free_port()))
        service.start()
        chosen = [("main", "main", ""), *MAINTENANCE[: branch_count - 1]]
        generated = time.perf_counter()
        written = write_indexes(service.data, builds, chosen, seed)
        generated = time.perf_counter() - generated
        branches = [branch for branch, _, _ in chosen]
        home = work / "airflow"
        home.mkdir()
        config = work / "flatcar.yaml"
        write_config(config, branches, 10)
        server = ApiServer(home, config, service.connection())
        server.airflow("db", "migrate")
        server.airflow("dags", "reserialize")
        server.start()
        client = httpx.Client(
            base_url=server.base, headers={"Authorization": f"Bearer {server.token()}"}, timeout=60
        )
        started = time.perf_counter()
        first = client.get("/flatcar/")
        first_wall = (time.perf_counter() - started) * 1000
        assert first.status_code == 200, first.text[:500]
        first_app = float(re.search(r"app;dur=([\d.]+)", first.headers["server-timing"]).group(1))
        dags = client.get("/api/v2/dags?limit=100").json()["total_entries"]
        results = {f"cache_seconds={seconds:g}": [] for seconds in phases}
        for seconds in phases:
            phase = f"cache_seconds={seconds:g}"
            write_config(config, branches, seconds)
            for label, url in endpoints(written, branches):
                if seconds != phases[0] and url.startswith("/api/v2/"):
                    continue
                results[phase].append({"what": label, **measure(server, client, url, warmup, repeat)})
        report = {
            "machine": machine(),
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "builds": written["entries"],
            "branches": len(branches),
            "index_bytes": written["bytes"],
            "generated_s": round(generated, 2),
            "dags": dags,
            "repeat": repeat,
            "first_request": {"app_ms": first_app, "wall_ms": round(first_wall, 1)},
            "results": results,
        }
    finally:
        if server is not None:
            server.stop()
        service.stop()
        shutil.rmtree(work, ignore_errors=True)

    return report


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--builds", type=int, default=1000, help="entries in all the indexes together")
    parser.add_argument("--branches", type=int, default=10, help="branches (main and maintenance branches)")
    parser.add_argument("--repeat", type=int, default=40, help="measured requests per endpoint")
    parser.add_argument("--warmup", type=int, default=5, help="unmeasured requests per endpoint first")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    if not 2 <= args.branches <= len(MAINTENANCE) + 1:
        parser.error(f"--branches must be 2 to {len(MAINTENANCE) + 1}")
    report = collect(args.builds, args.branches, args.repeat, args.warmup, args.seed)
    results, dags = report["results"], report["dags"]
    first_app, first_wall = report["first_request"]["app_ms"], report["first_request"]["wall_ms"]
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{report['machine']}; {report['date']}")
    print(
        f"{report['builds']} builds on {report['branches']} branches "
        f"({report['index_bytes'] / 1024:.0f} KiB of indexes), {dags} DAGs; {args.repeat} requests each"
    )
    print(f"first /flatcar/ after the start: app {first_app:.1f} ms, wall {first_wall:.1f} ms")
    for phase, rows in results.items():
        print(f"\n{phase}")
        print(f"{'what':52} {'server ms (median/p90)':>23} {'app ms':>8} {'wall ms':>8} {'bytes':>9}")
        for row in rows:
            server_ms = row["server_ms"] or {}
            app = row["app_ms"]["median"] if row["app_ms"] else float("nan")
            print(
                f"{row['what']:52} {server_ms.get('median', float('nan')):>11.1f} / "
                f"{server_ms.get('p90', float('nan')):<9.1f} {app:>8.1f} {row['wall_ms']['median']:>8.1f} "
                f"{row['bytes']:>9}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
