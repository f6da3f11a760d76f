"""Benchmark: orchestration overhead of the full build under a real scheduler, against a shell script.

The stack is the quickstart's, started by the benchmark in a temporary directory: the project's build
cache service (nginx HTTPS reads on a loopback address's port 443, sshd + rsync writes), a scripts
origin made from the miniature scripts repository (``flatcar_airflow.demo``), and Airflow 3.3 as four
processes (api-server, scheduler with the LocalExecutor, dag-processor, triggerer; SQLite). The DAG is
the full build of ``main`` for amd64 (qemu_uefi image, one test vendor), the local runner.

The baseline is the "minimal glue" of the seed document: a plain bash script that runs the same step
functions back to back, each in a fresh clone of the origin at the same version tag (what a CI job's
checkout is), ``source ci-automation/<script>; <function> <args>``, then ``./ci-cleanup.sh``. The
cache is emptied before each run, so both build everything.

Figures, for each step length (``MINI_SLOW_STEP`` makes every step sleep that long first; in the
pipeline it reaches the steps through ``step_env``):

* overhead per step task: the task's span under Airflow (from the end of its last upstream task, or
  the run's start, to its end) minus the same step's time in the shell script: median and max;
* the whole run (trigger to done) against the shell script: the ratio.

The no-op nightly (benchmarks/orchestration_noop.py) runs on the same stack after the first build.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .common import ROOT, Figure, docker_lock, say

sys.path.insert(0, str(ROOT / "tests"))

DAG_ID = "flatcar_full"
CONN_ID = "flatcar_buildcache"
GOAL_S = 0.5
#: The public step functions (MINI_SLOW_STEP names them).
FUNCTIONS = (
    "sdk_bootstrap",
    "sdk_container_build",
    "packages_tag",
    "packages_build",
    "push_packages",
    "image_build",
    "vm_build",
    "test_run",
    "image_changes",
)

SHELL_SCRIPT = r"""#!/bin/bash
# The minimal glue: each step in a fresh clone at the tag, one after the other; prints "<name> <seconds>".
set -euo pipefail
origin=$1 tag=$2 root=$3 prefix=$4 user=$5
shift 5
run_step() {
    local name=$1 script=$2
    shift 2
    local ws=$root/ws-$name started=$EPOCHREALTIME
    git clone -q "$origin" "$ws"
    git -C "$ws" checkout -q --detach "$tag"
    printf 'BUILDCACHE_PATH_PREFIX=%s\nBUILDCACHE_USER=%s\n' "$prefix" "$user" \
        >>"$ws/ci-automation/ci-config.env"
    git -C "$ws" update-index --skip-worktree ci-automation/ci-config.env
    (cd "$ws" && source "ci-automation/$script" && "$@") </dev/null >"$root/$name.log" 2>&1
    if [[ -f $ws/ci-cleanup.sh ]]; then
        (cd "$ws" && bash ./ci-cleanup.sh) </dev/null >>"$root/$name.log" 2>&1
    fi
    rm -rf "$ws"
    echo "$name $(bc <<<"$EPOCHREALTIME - $started")"
}
while (($#)); do
    IFS=' ' read -r -a step <<<"$1"
    run_step "${step[@]}"
    shift
done
"""


@dataclass
class Stack:
    """The quickstart's stack for one benchmark run (build cache, origin, Airflow's four services)."""

    work: Path
    sleep: float = 0
    cache: object = None
    servers: object = None
    #: Docker tags (version in docker form) of the builds made: their images are removed at the end.
    built: set[str] = field(default_factory=set)
    config: Path = field(init=False)
    origin: Path = field(init=False)
    shim: Path = field(init=False)

    def __post_init__(self) -> None:
        self.config = self.work / "flatcar.yaml"
        self.origin = self.work / "scripts.git"
        self.shim = self.work / "ssh-shim"

    # -- the build cache, the origin, the images -------------------------------------------------------

    def prepare(self) -> None:
        from flatcar_airflow.buildcache_server import BuildCacheServer, Settings
        from flatcar_airflow.demo import find_mini_scripts, make_demo_images, make_demo_origin
        from flatcar_airflow.quickstart.command import _any_free_port, _cache_address

        address = _cache_address(None)
        self.cache = BuildCacheServer(self.work / "buildcache")
        self.cache.init(Settings(server=address, listen=address, ssh_port=_any_free_port(address)))
        self.cache.start()
        mini = find_mini_scripts()
        make_demo_origin(self.origin, mini)
        make_demo_images(mini)
        settings = self.cache.settings()
        ssh_config = self.work / "ssh_config"
        ssh_config.write_text(
            f"Host {address}\n    Port {settings.ssh_port}\n    User {settings.user}\n"
            f"    IdentityFile {self.cache.writer_key}\n    IdentitiesOnly yes\n"
            "    StrictHostKeyChecking no\n"
            "    UserKnownHostsFile /dev/null\n    LogLevel ERROR\n    BatchMode yes\n"
        )
        self.shim.mkdir()
        (self.shim / "ssh").write_text(f"#!/bin/sh\nexec {shutil.which('ssh')} -F '{ssh_config}' \"$@\"\n")
        (self.shim / "ssh").chmod(0o755)

    def clear_cache(self) -> None:
        for entry in Path(self.cache.data).iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()

    def write_config(self) -> None:
        slow = ",".join(f"{fn}:{self.sleep:g}" for fn in FUNCTIONS) if self.sleep else ""
        self.config.write_text(
            yaml.safe_dump(
                {
                    "scripts_repo": str(self.origin),
                    "buildcache_conn_id": CONN_ID,
                    "runner": {"type": "local", "root": str(self.work / "build-root")},
                    "tagging_cache": str(self.work / "tagging-cache"),
                    "arches": {"amd64": {"formats": ["qemu_uefi"], "test_vendors": ["qemu_uefi"]}},
                    "full": {"enabled": True, "branch": "main", "schedule": None, "arches": ["amd64"]},
                    "os": {"branches": [], "schedule": None, "arches": ["amd64"]},
                    "retries": 0,
                    "preflight": {"min_free_gb": 1, "network": "off"},
                    "step_env": {"MINI_SLOW_STEP": slow} if slow else {},
                }
            )
        )

    # -- Airflow -----------------------------------------------------------------------------------------

    def start_airflow(self, **settings: str) -> None:
        from airflow_servers import AirflowServers, airflow_env

        home = self.work / "airflow"
        home.mkdir(exist_ok=True)
        self.write_config()
        env = airflow_env(
            home,
            self.config,
            AIRFLOW__CORE__EXECUTOR="LocalExecutor",
            AIRFLOW__CORE__PLUGINS_FOLDER=str(ROOT / "plugins"),
            **{f"AIRFLOW_CONN_{CONN_ID.upper()}": json.dumps(self.cache.connection())},
            **settings,
        )
        self.servers = AirflowServers(home, env, DAG_ID)
        self.servers.cli("db", "migrate")
        for name in ("api-server", "scheduler", "dag-processor", "triggerer"):
            self.servers.start(name)
        self.servers.wait_healthy()
        self.servers.set_pools()
        self.servers.wait(self._parsed, 300, f"{DAG_ID} to be parsed")
        response = self.servers.api.patch(f"/dags/{DAG_ID}", json={"is_paused": False})
        response.raise_for_status()

    def _parsed(self) -> bool:
        if self.servers.get(f"/dags/{DAG_ID}") is not None:
            return True
        errors = (self.servers.get("/importErrors") or {}).get("import_errors", [])
        if errors:
            raise RuntimeError(f"the DAG file does not load: {errors[0]['stack_trace'][-1500:]}")
        return False

    def trigger(self, timeout: float = 1800) -> dict:
        """Trigger a run of the full build and wait for it; its run, task instances and wall time."""
        started = time.monotonic()
        response = self.servers.api.post(f"/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": {}})
        response.raise_for_status()
        run_id = response.json()["dag_run_id"]

        def done():
            run = self.servers.get(f"/dags/{DAG_ID}/dagRuns/{run_id}")
            return run if run and run["state"] in ("success", "failed") else None

        self.servers.wait(done, timeout, f"run {run_id} to finish")
        wall = time.monotonic() - started
        run = done()
        tis = self.servers.task_instances(run_id)
        if run["state"] != "success":
            failed = sorted(t for t, ti in tis.items() if ti["state"] not in ("success", "skipped"))
            raise RuntimeError(f"run {run_id} {run['state']}: tasks {failed}\n{self._logs(run_id, failed)}")
        tag = self.servers.xcom(run_id, "tag") if tis["tag"]["state"] == "success" else None
        if tag:
            self.built.add(tag["tag"].split("-", 1)[1])
        return {"run_id": run_id, "run": run, "tis": tis, "wall": wall, "tag": tag}

    def _logs(self, run_id: str, task_ids: list[str]) -> str:
        """The end of the first failed task's log (where a benchmark run broke)."""
        for task_id in task_ids[:1]:
            response = self.servers.api.get(
                f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}/logs/1",
                headers={"Accept": "text/plain"},
            )
            return f"--- {task_id} ---\n{response.text[-3000:]}"
        return ""

    def upstream(self) -> dict[str, list[str]]:
        tasks = self.servers.get(f"/dags/{DAG_ID}/tasks")["tasks"]
        ups: dict[str, list[str]] = {t["task_id"]: [] for t in tasks}
        for t in tasks:
            for down in t["downstream_task_ids"]:
                ups[down].append(t["task_id"])
        return ups

    def stop(self) -> None:
        if self.servers is not None:
            self.servers.stop()
        if self.cache is not None:
            self.cache.stop()
        self.remove_images()

    def remove_images(self) -> None:
        """The docker images the builds of this benchmark loaded or committed (tagged with its versions)."""
        if not self.built:
            return
        listed = subprocess.run(
            ["docker", "images", "--format", "{{.Repository}}:{{.Tag}}"], capture_output=True, text=True
        )
        ours = [name for name in listed.stdout.split() if name.rsplit(":", 1)[-1] in self.built]
        if ours:
            subprocess.run(["docker", "image", "rm", *ours], capture_output=True, check=False)

    # -- the shell baseline ------------------------------------------------------------------------------

    def shell(self, tag: dict, steps: list[tuple[str, str, str, tuple[str, ...]]]) -> dict:
        """Run ``steps`` (name, script, function, args) back to back in bash: seconds per step, and wall."""
        script = self.work / "minimal-glue.sh"
        script.write_text(SHELL_SCRIPT)
        root = Path(tempfile.mkdtemp(prefix="shell-", dir=self.work))
        settings = self.cache.settings()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MINI_"))},
            "PATH": f"{self.shim}{os.pathsep}{os.environ['PATH']}",
            "BUILDCACHE_SERVER": settings.server,
            "CURL_CA_BUNDLE": str(self.cache.ca_file),
            "HOME": str(root),
        }
        if self.sleep:
            env["MINI_SLOW_STEP"] = ",".join(f"{fn}:{self.sleep:g}" for fn in FUNCTIONS)
        argv = [" ".join((name, script_name, function, *args)) for name, script_name, function, args in steps]
        started = time.monotonic()
        proc = subprocess.run(
            ["bash", str(script), str(self.origin), tag["tag"], str(root), str(self.cache.data),
             settings.user, *argv],
            env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        wall = time.monotonic() - started
        if proc.returncode != 0:
            logs = "\n".join(p.read_text()[-1500:] for p in sorted(root.glob("*.log"))[-1:])
            raise RuntimeError(f"the shell baseline failed: {proc.stderr[-1500:]}\n{logs}")
        seconds = {
            line.split()[0]: float(line.split()[1]) for line in proc.stdout.splitlines() if line.strip()
        }
        shutil.rmtree(root, ignore_errors=True)
        return {"steps": seconds, "wall": wall}


def _time(text: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


#: task id (without the arch's group) -> (script, function, args given the tag's record)
def shell_steps(tis: dict, tag: dict) -> list[tuple[str, str, str, tuple[str, ...]]]:
    """The shell's steps for the step tasks that ran, in the order they ran under Airflow."""
    seed = str(tag.get("seed_sdk") or "")
    table = {
        "sdk_bootstrap": ("sdk_bootstrap.sh", "sdk_bootstrap", (seed, tag["tag"])),
        "sdk_container": ("sdk_container.sh", "sdk_container_build", ()),
        "packages_tag": ("packages-tag.sh", "packages_tag", (tag["tag"],)),
        "packages": ("packages.sh", "packages_build", ("amd64",)),
        "push_packages": ("push_pkgs.sh", "push_packages", ("amd64",)),
        "image": ("image.sh", "image_build", ("amd64",)),
        "vms": ("vms.sh", "vm_build", ("amd64", "qemu_uefi")),
        "test_qemu_uefi": ("test.sh", "test_run", ("amd64", "qemu_uefi")),
        "image_changes": ("image_changes.sh", "image_changes", ("amd64", "last-nightly")),
    }
    ran = sorted((ti["start_date"], task_id) for task_id, ti in tis.items() if ti["state"] == "success")
    out = []
    for _, task_id in ran:
        short = task_id.split(".")[-1]
        for key, (script, function, args) in table.items():
            if short == key:
                out.append((task_id, script, function, args))
    return out


def overheads(result: dict, upstream: dict[str, list[str]], shell: dict) -> dict[str, dict]:
    """Per step task: its span under Airflow, the shell's time, queue latency, and the difference."""
    tis = result["tis"]
    run_start = _time(result["run"]["start_date"]) or _time(result["run"]["queued_at"])
    out = {}
    for task_id, seconds in shell["steps"].items():
        ti = tis[task_id]
        ends = [_time(tis[u]["end_date"]) for u in upstream.get(task_id, []) if tis[u]["end_date"]]
        ready = max(ends) if ends else run_start
        end = _time(ti["end_date"])
        span = (end - ready).total_seconds()
        queued = _time(ti.get("queued_when") or ti.get("queued_dttm"))
        start = _time(ti["start_date"])
        out[task_id] = {
            "span": round(span, 3),
            "shell": seconds,
            "overhead": round(span - seconds, 3),
            "duration": ti["duration"],
            "scheduled_after": round((queued - ready).total_seconds(), 3) if queued else None,
            "queued_for": round((start - queued).total_seconds(), 3) if queued else None,
        }
    return out


def measure(stack: Stack, runs: int, after_first=None) -> dict:
    """``runs`` pairs of (Airflow run, shell run), the cache emptied before each.

    ``after_first(result)`` is called after the first Airflow run, while its outputs are in the cache
    (the no-op nightly is measured there).
    """
    pairs = []
    upstream = stack.upstream()
    for n in range(runs):
        stack.clear_cache()
        say(f"orchestration: step sleep {stack.sleep:g} s, Airflow run {n + 1}/{runs}")
        result = stack.trigger()
        if n == 0 and after_first is not None:
            after_first(result)
        steps = shell_steps(result["tis"], result["tag"])
        stack.clear_cache()
        say(f"orchestration: step sleep {stack.sleep:g} s, shell run {n + 1}/{runs}")
        shell = stack.shell(result["tag"], steps)
        pairs.append({"airflow": result, "shell": shell, "tasks": overheads(result, upstream, shell)})
    return {"pairs": pairs}


def figures_for(sleep: float, measured: dict) -> list[Figure]:
    pairs = measured["pairs"]
    per_task = [t["overhead"] for p in pairs for t in p["tasks"].values()]
    ratios = [p["airflow"]["wall"] / p["shell"]["wall"] for p in pairs]
    airflow_wall = statistics.median(p["airflow"]["wall"] for p in pairs)
    shell_wall = statistics.median(p["shell"]["wall"] for p in pairs)
    steps = len(pairs[0]["tasks"])
    tasks = len(pairs[0]["airflow"]["tis"])
    last = pairs[-1]["tasks"]
    detail = {
        t: {k: v for k, v in row.items() if k in ("overhead", "shell", "scheduled_after", "queued_for")}
        for t, row in last.items()
    }
    common = {"benchmark": "orchestration", "runs": len(pairs)}
    return [
        Figure(
            **common,
            name=f"orchestration overhead per step task, steps of {sleep:g} s (LocalExecutor; max "
            f"{max(per_task):.2f} s)",
            value=round(statistics.median(per_task), 3),
            minimum=round(min(per_task), 3),
            unit="s",
            baseline="the same step in the shell script",
            baseline_value=round(
                statistics.median(t["shell"] for p in pairs for t in p["tasks"].values()), 3
            ),
            goal=f"< {GOAL_S} s median",
            met=statistics.median(per_task) < GOAL_S,
            extra={"max": round(max(per_task), 3), "tasks": detail, "sleep": sleep},
        ),
        Figure(
            **common,
            name=f"full build amd64 ({steps} steps, {tasks} tasks), steps of {sleep:g} s: trigger to done",
            value=round(airflow_wall, 2),
            minimum=round(min(p["airflow"]["wall"] for p in pairs), 2),
            unit="s",
            baseline="the step functions back to back in bash",
            baseline_value=round(shell_wall, 2),
            ratio=round(statistics.median(ratios), 2),
            extra={"sleep": sleep},
        ),
    ]


def run(
    smoke: bool = False, sleeps: tuple[float, ...] = (0, 10, 60), runs: int = 2, noop_runs: int = 3
) -> list[Figure]:
    """The figures of each step length; the no-op nightly is measured on the same stack, after the
    first build (benchmarks/orchestration_noop.py returns that figure when it runs next)."""
    from . import orchestration_noop

    sleeps, runs, noop_runs = ((0,), 1, 1) if smoke else (sleeps, runs, noop_runs)

    def noop(result: dict) -> None:
        orchestration_noop.SHARED[smoke] = orchestration_noop.measure(stack, result, noop_runs)

    figures = []
    with docker_lock(), contextlib.ExitStack() as cleanup:
        work = Path(tempfile.mkdtemp(prefix="flatcar-bench-orchestration-"))
        stack = Stack(work)
        cleanup.callback(shutil.rmtree, work, ignore_errors=True)
        cleanup.callback(stack.stop)
        stack.prepare()
        for sleep in sleeps:
            if stack.servers is not None:
                stack.servers.stop()
            stack.sleep = sleep
            stack.start_airflow()
            after_first = noop if sleep == sleeps[0] and noop_runs else None
            figures += figures_for(sleep, measure(stack, 1 if sleep >= 60 else runs, after_first))
    return figures
