"""Benchmark: orchestration overhead of the full build under a real scheduler, against a shell script.

The stack is the quickstart's, started by the benchmark in a temporary directory: the project's build
cache service (nginx HTTPS reads on a loopback address's port 443, sshd + rsync writes), a scripts
origin made from the miniature scripts repository (``flatcar_airflow.demo``), and Airflow 3.3 as four
processes (api-server, scheduler with the LocalExecutor, dag-processor, triggerer; SQLite), or with the
CeleryExecutor (PostgreSQL metadata database, Redis broker, one Celery worker on the ``default`` queue;
tests/celery_backends.py starts them). The DAG is the full build of ``main`` for amd64 (qemu_uefi image,
one test vendor), the local runner.

The baseline is the "minimal glue" of the seed document: a plain bash script that runs the same step
functions back to back, each in a fresh clone of the origin at the same version tag (what a CI job's
checkout is), ``source ci-automation/<script>; <function> <args>``, then ``./ci-cleanup.sh``. The
cache is emptied before each run, so both build everything.

Figures, for each step length (``MINI_SLOW_STEP`` makes every step sleep that long first; in the
pipeline it reaches the steps through ``step_env``):

* overhead per step task: the task's span under Airflow (from the end of its last upstream task, or
  the run's start, to its end) minus the same step's time in the shell script: median and max;
* the whole run (trigger to done) against the shell script: the ratio;
* Airflow's own floor: a DAG of the same shape (the full build's task ids, dependencies, pools, queues
  and trigger rules, read from the real DAG through the REST API) made of tasks that do nothing,
  written into the stack's own dags folder beside a copy of ``dags/flatcar.py`` and triggered the same
  way; its per-task cost is computed the same way (a trivial task's own work is ~0), for the same
  task ids. What is left of the overhead above it is flatcar-airflow's (the DAG file's parse in the
  task process, the operator's checks, the runner, the work tree, the job).

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
#: The same-shaped DAG of trivial tasks (Airflow's floor), written into the stack's dags folder.
FLOOR_DAG_ID = "flatcar_full_floor"
EXECUTORS = {"local": "LocalExecutor", "celery": "CeleryExecutor"}
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

FLOOR_DAG = '''"""Airflow's floor for the orchestration benchmark: the full build's shape, trivial tasks."""

import json

from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG

#: task id -> its downstream task ids, pool, queue and trigger rule (from the real DAG, REST API)
TASKS = json.loads(%r)


def nothing():
    return None


with DAG(%r, schedule=None, catchup=False, max_active_runs=1, tags=["benchmark"]) as dag:
    ops = {
        task_id: PythonOperator(
            task_id=task_id,
            python_callable=nothing,
            pool=spec["pool"],
            pool_slots=spec["pool_slots"],
            queue=spec["queue"],
            trigger_rule=spec["trigger_rule"],
            retries=0,
        )
        for task_id, spec in TASKS.items()
    }
    for task_id, spec in TASKS.items():
        for down in spec["downstream"]:
            ops[task_id] >> ops[down]
'''


@dataclass
class Stack:
    """The quickstart's stack for one benchmark run (build cache, origin, Airflow's four services)."""

    work: Path
    sleep: float = 0
    #: ``local`` or ``celery`` (EXECUTORS)
    executor: str = "local"
    #: Airflow settings of the executor's backends (tests/celery_backends.celery_settings)
    executor_settings: dict = field(default_factory=dict)
    #: the smoke's smaller build: no test vendor, no image_changes, one step in the shell script
    small: bool = False
    cache: object = None
    servers: object = None
    #: Docker tags (version in docker form) of the builds made: their images are removed at the end.
    built: set[str] = field(default_factory=set)
    config: Path = field(init=False)
    origin: Path = field(init=False)
    shim: Path = field(init=False)
    dags: Path = field(init=False)

    def __post_init__(self) -> None:
        self.config = self.work / "flatcar.yaml"
        self.origin = self.work / "scripts.git"
        self.shim = self.work / "ssh-shim"
        self.dags = self.work / "dags"

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
        # The stack's own dags folder: the project's DAG file, and later the floor DAG beside it.
        self.dags.mkdir()
        shutil.copy(ROOT / "dags" / "flatcar.py", self.dags / "flatcar.py")

    def clear_cache(self) -> None:
        for entry in Path(self.cache.data).iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()

    def write_config(self) -> None:
        slow = ",".join(f"{fn}:{self.sleep:g}" for fn in FUNCTIONS) if self.sleep else ""
        vendors = [] if self.small else ["qemu_uefi"]
        self.config.write_text(
            yaml.safe_dump(
                {
                    "scripts_repo": str(self.origin),
                    "buildcache_conn_id": CONN_ID,
                    "runner": {"type": "local", "root": str(self.work / "build-root")},
                    "tagging_cache": str(self.work / "tagging-cache"),
                    "arches": {"amd64": {"formats": ["qemu_uefi"], "test_vendors": vendors}},
                    "image_changes": None if self.small else "last-nightly",
                    "full": {"enabled": True, "branch": "main", "schedule": None, "arches": ["amd64"]},
                    "os": {"branches": [], "schedule": None, "arches": ["amd64"]},
                    "retries": 0,
                    "preflight": {"min_free_gb": 1, "network": "off"},
                    "step_env": {"MINI_SLOW_STEP": slow} if slow else {},
                }
            )
        )

    # -- Airflow -----------------------------------------------------------------------------------------

    @property
    def executor_name(self) -> str:
        return EXECUTORS[self.executor]

    def start_airflow(self, **settings: str) -> None:
        """Airflow's services on this stack's executor (a home per executor; its database is kept across
        restarts), both DAGs parsed and unpaused."""
        from airflow_servers import AirflowServers, airflow_env

        home = self.work / f"airflow-{self.executor}"
        home.mkdir(exist_ok=True)
        self.write_config()
        overrides = {
            "AIRFLOW__CORE__EXECUTOR": self.executor_name,
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            f"AIRFLOW_CONN_{CONN_ID.upper()}": json.dumps(self.cache.connection()),
            **self.executor_settings,
            **settings,
        }
        env = airflow_env(home, self.config, **overrides)
        self.servers = AirflowServers(home, env, DAG_ID)
        self.servers.cli("db", "migrate")
        say("orchestration: database migrated, starting the services")
        for name in ("api-server", "scheduler", "dag-processor", "triggerer"):
            self.servers.start(name)
        if self.executor == "celery":
            # One worker on the queue the configuration uses (``queue``, default ``default``), as many
            # task slots as the LocalExecutor's parallelism.
            slots = env["AIRFLOW__CORE__PARALLELISM"]
            self.servers.start("worker", "celery", "worker", "--queues", "default", "--concurrency", slots)
        self.servers.wait_healthy()
        self.servers.set_pools()
        self.servers.wait(lambda: self._parsed(DAG_ID), 300, f"{DAG_ID} to be parsed")
        say(f"orchestration: {DAG_ID} parsed")
        if not (self.dags / "floor.py").exists():
            self.write_floor_dag()
        self.servers.wait(lambda: self._parsed(FLOOR_DAG_ID), 300, f"{FLOOR_DAG_ID} to be parsed")
        for dag_id in (DAG_ID, FLOOR_DAG_ID):
            self.servers.api.patch(f"/dags/{dag_id}", json={"is_paused": False}).raise_for_status()

    def stop_airflow(self) -> None:
        if self.servers is not None:
            self.servers.stop()
            self.servers = None

    def write_floor_dag(self) -> None:
        """The floor DAG: the real DAG's tasks (ids, dependencies, pools, queues, trigger rules)."""
        tasks = self.servers.get(f"/dags/{DAG_ID}/tasks")["tasks"]
        shape = {
            t["task_id"]: {
                "downstream": sorted(t["downstream_task_ids"]),
                "pool": t["pool"] or "default_pool",
                "pool_slots": int(t["pool_slots"] or 1),
                "queue": t["queue"] or "default",
                "trigger_rule": t["trigger_rule"] or "all_success",
            }
            for t in tasks
        }
        (self.dags / "floor.py").write_text(FLOOR_DAG % (json.dumps(shape, sort_keys=True), FLOOR_DAG_ID))

    def _parsed(self, dag_id: str) -> bool:
        if self.servers.get(f"/dags/{dag_id}") is not None:
            return True
        errors = (self.servers.get("/importErrors") or {}).get("import_errors", [])
        if errors:
            raise RuntimeError(f"the DAG file does not load: {errors[0]['stack_trace'][-1500:]}")
        return False

    def trigger(self, timeout: float = 1800, dag_id: str = DAG_ID, conf: dict | None = None) -> dict:
        """Trigger a run of ``dag_id`` (the full build, or the floor DAG) and wait for it; its run, task
        instances and wall time."""
        started = time.monotonic()
        response = self.servers.api.post(
            f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf or {}}
        )
        response.raise_for_status()
        run_id = response.json()["dag_run_id"]

        def done():
            run = self.servers.get(f"/dags/{dag_id}/dagRuns/{run_id}")
            return run if run and run["state"] in ("success", "failed") else None

        self.servers.wait(done, timeout, f"run {run_id} of {dag_id} to finish")
        wall = time.monotonic() - started
        run = done()
        tis = self.servers.task_instances(run_id, dag_id)
        if run["state"] != "success":
            failed = sorted(t for t, ti in tis.items() if ti["state"] not in ("success", "skipped"))
            logs = self._logs(dag_id, run_id, failed)
            raise RuntimeError(f"run {run_id} of {dag_id} {run['state']}: tasks {failed}\n{logs}")
        if dag_id != DAG_ID:
            return {"run_id": run_id, "run": run, "tis": tis, "wall": wall}
        tag = self.servers.xcom(run_id, "tag") if tis["tag"]["state"] == "success" else None
        if tag:
            self.built.add(tag["tag"].split("-", 1)[1])
        return {"run_id": run_id, "run": run, "tis": tis, "wall": wall, "tag": tag}

    def _logs(self, dag_id: str, run_id: str, task_ids: list[str]) -> str:
        """The end of the first failed task's log (where a benchmark run broke)."""
        for task_id in task_ids[:1]:
            response = self.servers.api.get(
                f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/1",
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
        self.stop_airflow()
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


def measure(stack: Stack, runs: int, after_first=None, floor: bool = False) -> dict:
    """``runs`` pairs of (Airflow run, shell run), the cache emptied before each; with ``floor``, each
    pair also gets a run of the floor DAG right after its Airflow run (A F B A F B …).

    ``after_first(result)`` is called after the first Airflow run, while its outputs are in the cache
    (the no-op nightly is measured there).
    """
    pairs = []
    upstream = stack.upstream()
    where = f"{stack.executor_name}, step sleep {stack.sleep:g} s"
    for n in range(runs):
        stack.clear_cache()
        say(f"orchestration: {where}, Airflow run {n + 1}/{runs}")
        result = stack.trigger()
        if n == 0 and after_first is not None:
            after_first(result)
        steps = shell_steps(result["tis"], result["tag"])
        if stack.small:  # the smoke: the shell script's code runs once for one step (the first)
            steps = steps[:1]
        pair = {}
        if floor:
            say(f"orchestration: {where}, floor DAG run {n + 1}/{runs}")
            trivial = {"steps": {task_id: 0.0 for task_id, *_ in steps}}
            pair["floor"] = overheads(stack.trigger(dag_id=FLOOR_DAG_ID), upstream, trivial)
        stack.clear_cache()
        say(f"orchestration: {where}, shell run {n + 1}/{runs}")
        shell = stack.shell(result["tag"], steps)
        pairs.append({"airflow": result, "shell": shell, "tasks": overheads(result, upstream, shell), **pair})
    return {"pairs": pairs}


def figures_for(sleep: float, measured: dict, executor: str = "LocalExecutor") -> list[Figure]:
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
    # The LocalExecutor's rows keep the names they had before the CeleryExecutor was measured.
    run_name = "" if executor == "LocalExecutor" else f", {executor}"
    overhead = statistics.median(per_task)
    figures = [
        Figure(
            **common,
            name=f"orchestration overhead per step task, steps of {sleep:g} s ({executor}; max "
            f"{max(per_task):.2f} s)",
            value=round(overhead, 3),
            minimum=round(min(per_task), 3),
            unit="s",
            baseline="the same step in the shell script",
            baseline_value=round(
                statistics.median(t["shell"] for p in pairs for t in p["tasks"].values()), 3
            ),
            goal=f"< {GOAL_S} s median",
            met=overhead < GOAL_S,
            extra={"max": round(max(per_task), 3), "tasks": detail, "sleep": sleep, "executor": executor},
        ),
        Figure(
            **common,
            name=f"full build amd64 ({steps} steps, {tasks} tasks), steps of {sleep:g} s{run_name}: "
            "trigger to done",
            value=round(airflow_wall, 2),
            minimum=round(min(p["airflow"]["wall"] for p in pairs), 2),
            unit="s",
            baseline="the step functions back to back in bash",
            baseline_value=round(shell_wall, 2),
            ratio=round(statistics.median(ratios), 2),
            extra={"sleep": sleep, "executor": executor},
        ),
    ]
    if all("floor" in p for p in pairs):
        floor = [t["overhead"] for p in pairs for t in p["floor"].values()]
        detail = {
            t: {k: v for k, v in row.items() if k in ("overhead", "scheduled_after", "queued_for")}
            for t, row in pairs[-1]["floor"].items()
        }
        figures.append(
            Figure(
                **common,
                name=f"Airflow's own cost per task, same shape, trivial tasks ({executor}; max "
                f"{max(floor):.2f} s)",
                value=round(statistics.median(floor), 3),
                minimum=round(min(floor), 3),
                unit="s",
                baseline=f"orchestration overhead per step task, steps of {sleep:g} s (above)",
                baseline_value=round(overhead, 3),
                ratio=round(statistics.median(floor) / overhead, 2) if overhead > 0 else None,
                note="the ratio is the share of the overhead that is Airflow's own",
                extra={"max": round(max(floor), 3), "tasks": detail, "executor": executor},
            )
        )
    return figures


def run(
    smoke: bool = False,
    sleeps: tuple[float, ...] = (0, 10, 60),
    runs: int = 2,
    noop_runs: int = 3,
    executors: tuple[str, ...] = ("local", "celery"),
) -> list[Figure]:
    """The figures of each executor and step length, with Airflow's floor (the floor DAG) measured at
    the first step length; the no-op nightly is measured on the same stack, after the first build of
    each executor (benchmarks/orchestration_noop.py returns those figures when it runs next).

    The smoke runs every code path once on a smaller build (no test vendor, no image_changes): the
    LocalExecutor, steps of 0 s, one run of each DAG, the shell script with the first step only, and
    one no-op nightly.
    """
    from celery_backends import celery_settings, postgres_server, redis_server

    from . import orchestration_noop

    unknown = sorted(set(executors) - set(EXECUTORS))
    if unknown:
        raise ValueError(f"unknown executor {', '.join(unknown)}: choose from {', '.join(EXECUTORS)}")
    if smoke:
        sleeps, runs, noop_runs, executors = (0,), 1, 1, ("local",)
    orchestration_noop.SHARED.setdefault(smoke, [])

    def noop(result: dict) -> None:
        figure = orchestration_noop.measure(stack, result, noop_runs)
        orchestration_noop.SHARED[smoke].append(figure)

    figures = []
    with docker_lock(), contextlib.ExitStack() as cleanup:
        work = Path(tempfile.mkdtemp(prefix="flatcar-bench-orchestration-"))
        stack = Stack(work, small=smoke)
        cleanup.callback(shutil.rmtree, work, ignore_errors=True)
        cleanup.callback(stack.stop)
        say("orchestration: the build cache, the origin and the images")
        stack.prepare()
        for executor in executors:
            with contextlib.ExitStack() as backends:
                stack.executor, stack.executor_settings = executor, {}
                if executor == "celery":
                    database = backends.enter_context(postgres_server())
                    broker = backends.enter_context(redis_server(work / "redis"))
                    stack.executor_settings = celery_settings(database, broker, concurrency=4)
                backends.callback(stack.stop_airflow)  # before the database and the broker stop
                for sleep in sleeps:
                    stack.stop_airflow()
                    stack.sleep = sleep
                    say(f"orchestration: starting Airflow ({stack.executor_name}, step sleep {sleep:g} s)")
                    stack.start_airflow()
                    first = sleep == sleeps[0]
                    after_first = noop if first and noop_runs else None
                    measured = measure(stack, 1 if sleep >= 60 else runs, after_first, floor=first)
                    figures += figures_for(sleep, measured, stack.executor_name)
    return figures
