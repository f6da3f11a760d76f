"""Runners against real processes, git and docker: a probe step in a real scripts-like origin.

The probe step reports what a Flatcar step would see (its arguments, origin/main, the build cache
settings, whether git sees a clean tree, whether stdin is closed), registers a cleanup, and can fail,
ask to skip, run slowly, or hang with a child process and a container for the kill tests.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from connections import host_connection
from gitrepos import assert_nothing_of_the_step_left, commit_file, git, make_origins

from flatcar_airflow.runners.base import Job, RunnerError
from flatcar_airflow.runners.local import LocalRunner
from flatcar_airflow.runners.ssh import SSHRunner

PROBE = r"""# >>> This file is supposed to be SOURCED from the repository ROOT. <<<
function probe() {
    echo "args:$#"
    for a in "$@"; do printf 'arg=<%s>\n' "$a"; done
    echo "origin-main=$(git rev-parse origin/main)"
    ( source ci-automation/ci-config.env
      echo "cache=${BUILDCACHE_USER}@${BUILDCACHE_SERVER}:${BUILDCACHE_PATH_PREFIX}" )
    git diff --quiet HEAD && echo "tree-clean"
    if read -r -t 1 line; then echo "stdin-open"; else echo "stdin-closed"; fi
    [ -f ci-cleanup.sh ] || echo '#!/bin/bash' > ci-cleanup.sh
    echo "echo cleanup-ran >> '${PROBE_MARKS}'" >> ci-cleanup.sh
    if [ -n "${PROBE_RUNS:-}" ]; then  # "start N" ... "end N" per run; "overlap" if two ever ran at once
        mkdir "${PROBE_RUNS}.lock" 2>/dev/null || echo overlap >> "${PROBE_RUNS}"
        echo "start ${PROBE_RUN}" >> "${PROBE_RUNS}"
        echo "rmdir '${PROBE_RUNS}.lock'; echo 'end ${PROBE_RUN}' >> '${PROBE_RUNS}'" >> ci-cleanup.sh
    fi
    mkdir -p images/latest
    echo data > images/latest/flatcar_production_image.bin.bz2
    printf '1..2\nok 1 - cl.basic\nnot ok 2 - cl.network\n' > results-qemu.tap
    case "${PROBE_MODE:-ok}" in
        fail) echo "failing"; return 3 ;;
        skip) touch skip-build ;;
        slow) sleep "${PROBE_SLOW:-3}" ;;
        hang)
            echo "docker rm -f probe-${PROBE_ID}" >> ci-cleanup.sh
            docker run -d --name "probe-${PROBE_ID}" --network none "${PROBE_IMAGE}" sleep 600 >/dev/null
            sleep 600 &
            echo "hanging $!"
            wait ;;
        flood)
            # Faster than any task log writes line by line: the pipe or the log file fills up.
            seq -f 'flood-%.0f' 1 "${PROBE_FLOOD:-200000}" ;;
        stubborn)
            # Ignores SIGTERM (and so does its child): only the SIGKILL after the stop grace ends it.
            trap '' TERM
            sleep 600 &
            echo "hanging $!"
            wait ;;
    esac
    echo "probe done"
}
"""
CONFIG = (
    'BUILDCACHE_SERVER="${BUILDCACHE_SERVER:-bincache.flatcar-linux.net}"\n'
    'BUILDCACHE_PATH_PREFIX="/mnt/buckets/linode-bincache"\nBUILDCACHE_USER="bincache"\n'
)


@pytest.fixture(scope="module")
def probe_origin(tmp_path_factory):
    origins = make_origins(tmp_path_factory.mktemp("probe") / "origins")
    commit_file(origins.work, "ci-automation/probe.sh", PROBE, "probe step")
    commit_file(origins.work, "ci-automation/ci-config.env", CONFIG, "config")
    git("tag", "main-4799.0.0-probe", cwd=origins.work)
    git("push", "-q", "origin", "main", "main-4799.0.0-probe", cwd=origins.work)
    return origins


@pytest.fixture(scope="module")
def probe_image():
    """A tiny busybox image for the probe's container (made locally: no registry is reachable)."""
    root = Path(subprocess.run(["mktemp", "-d"], capture_output=True, text=True, check=True).stdout.strip())
    (root / "bin").mkdir()
    subprocess.run(["cp", "/usr/bin/busybox", str(root / "bin/busybox")], check=True)
    for applet in ("sh", "sleep"):
        (root / "bin" / applet).symlink_to("busybox")
    tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
    subprocess.run(
        ["docker", "import", "-", "flatcar-airflow-test/busybox:probe"],
        stdin=tar.stdout,
        check=True,
        capture_output=True,
    )
    tar.wait()
    return "flatcar-airflow-test/busybox:probe"


@pytest.fixture(params=["local", "ssh", "docker"])
def bench(request, probe_origin, tmp_path, monkeypatch):
    """A runner of each kind, a root for its mirrors and work trees, and where the probe leaves marks.

    The docker runner mounts its root at the same path: the origin and the marks file live there too.
    """
    root = tmp_path / "root"
    root.mkdir()
    origin = probe_origin.url
    extra: dict = {}
    if request.param == "docker":
        from flatcar_airflow.runners.docker import DockerRunner

        image = request.getfixturevalue("runner_image")
        origin = str(root / "origin.git")
        shutil.copytree(probe_origin.url, origin)
        runner_factory = lambda: DockerRunner(image=image, root=str(root))  # noqa: E731
        extra = {"image": image}
    elif request.param == "ssh":
        from flatcar_airflow.runners.ssh import SSHRunner

        cache = request.getfixturevalue("build_cache")
        conn = host_connection(cache)
        monkeypatch.setenv("AIRFLOW_CONN_PROBE_BUILD_HOST", json.dumps(conn))
        runner_factory = lambda: SSHRunner(ssh_conn_id="probe_build_host", root=str(root), poll_interval=0.2)  # noqa: E731
    else:
        runner_factory = lambda: LocalRunner(root=str(root))  # noqa: E731
    bench = Bench(request.param, root, origin, root / "marks", runner_factory)
    bench.spec = {"kind": request.param, "root": str(root), **extra}
    return bench


@dataclass
class Bench:
    kind: str
    root: Path
    origin: str
    marks: Path
    make_runner: object

    #: The job key: unique to the test, so the docker runner's "stop an earlier attempt of this job"
    #: and the checks for leftovers never touch another session's jobs or containers.
    key: str = field(default_factory=lambda: f"probe-job-{uuid.uuid4().hex[:12]}")
    #: How another process makes the same runner (:func:`_run_in_a_task_process`).
    spec: dict = field(default_factory=dict)

    def job(self, *args, mode="ok", attempt=1, key=None, **env) -> Job:
        return Job(
            key=key or self.key,
            attempt=attempt,
            origin=self.origin,
            ref="main-4799.0.0-probe",
            script="ci-automation/probe.sh",
            function="probe",
            args=list(args),
            env={
                "PROBE_MODE": mode,
                "PROBE_MARKS": str(self.marks),
                "BUILDCACHE_SERVER": "cache.example",
                **env,
            },
            cache={"server": "cache.example", "user": "builder", "path_prefix": "/srv/cache dir"},
        )


def _lines_into(lines: list[str]):
    """A runner's ``on_output``: blocks of complete lines, appended to ``lines`` one line each."""
    return lambda block: lines.extend(block.split("\n"))


def run(runner, job):
    lines: list[str] = []
    ticks = [0]
    outcome = runner.run(job, _lines_into(lines), lambda: ticks.__setitem__(0, ticks[0] + 1))
    return outcome, lines, ticks[0]


def test_runner_runs_the_step_as_the_scripts_expect(bench, probe_origin):
    hostile = "a b'c\"$(touch /tmp/pwned-by-arg)`id`"
    outcome, lines, _ = run(bench.make_runner(), bench.job("amd64", hostile))

    assert outcome.rc == 0 and not outcome.skip_build and not outcome.signal
    assert "args:2" in lines and "arg=<amd64>" in lines and f"arg=<{hostile}>" in lines
    assert not Path("/tmp/pwned-by-arg").exists()
    assert f"origin-main={probe_origin.head('main')}" in lines
    assert "cache=builder@cache.example:/srv/cache dir" in lines
    assert "tree-clean" in lines  # the cache override is hidden from git
    assert "stdin-closed" in lines
    assert bench.marks.read_text() == "cleanup-ran\n"
    assert outcome.images == [("flatcar_production_image.bin.bz2", 5)]
    assert "not ok 2 - cl.network" in outcome.tap["results-qemu.tap"]
    # the job directory is gone; the mirror and the pooled work tree stay for the next step, clean
    assert any(line.startswith(f"[flatcar-airflow] work tree {bench.root}/pool/") for line in lines), lines
    assert_nothing_of_the_step_left(bench.root)
    assert not (bench.root / "jobs" / bench.key / "1").exists()
    assert len(list((bench.root / "mirrors").glob("*.git"))) == 1


def test_runner_reports_failure_and_skip_build_and_still_cleans_up(bench):
    failed, lines, _ = run(bench.make_runner(), bench.job(mode="fail"))
    assert failed.rc == 3 and "failing" in lines
    skipped, _, _ = run(bench.make_runner(), bench.job(mode="skip", attempt=2))
    assert skipped.rc == 0 and skipped.skip_build
    assert bench.marks.read_text() == "cleanup-ran\ncleanup-ran\n"


def test_a_flooding_step_is_logged_complete_and_in_order(bench):
    """Every line of a step printing 200,000 lines at once reaches the task log, in order, in batched
    records (far fewer records than lines), and the failure diagnosis's tail has the last lines with
    their numbers in the step's output (operators/step_log.py)."""
    from flatcar_airflow.operators.step_log import TAIL_LINES, StepLog

    records: list[str] = []
    log = StepLog(records.append)
    outcome = bench.make_runner().run(bench.job(mode="flood"), log.write, log.tick)
    log.flush()

    assert outcome.rc == 0
    lines = "\n".join(records).split("\n")
    flood = [line for line in lines if line.startswith("flood-")]
    assert flood == [f"flood-{i}" for i in range(1, 200001)]
    start = lines.index("flood-1")
    assert lines[start : start + 200000] == flood  # nothing else in between: no reordering
    assert lines[start - 1] == "stdin-closed" and lines[start + 200000] == "probe done"
    # ~1.6 MB in batches, not 200,000 records (docker's stream hands over smaller blocks than a pipe)
    assert len(records) < 20000, len(records)
    assert log.lines == len(lines)
    assert list(log.tail) == list(enumerate(lines, 1))[-TAIL_LINES:]


def test_runner_ticks_while_the_step_is_quiet(bench):
    """Ticks come while the step prints nothing (its 3 s sleep), not only with output: counted between
    the last line before the sleep and the first after it."""
    events: list[str] = []
    outcome = bench.make_runner().run(
        bench.job(mode="slow"),
        lambda block: events.extend(f"line:{line}" for line in block.split("\n")),
        lambda: events.append("tick"),
    )
    assert outcome.rc == 0
    before, after = events.index("line:stdin-closed"), events.index("line:probe done")
    quiet = events[before + 1 : after]
    assert all(event == "tick" for event in quiet), quiet
    assert len(quiet) >= 2


def _gone(pattern: str, within: float = 5.0) -> bool:
    """No process matches ``pattern`` (within a few seconds: stopped processes take a moment to exit).

    Only for patterns unique to the test (its own root directory), never a machine-wide name.
    """
    deadline = time.monotonic() + within
    while subprocess.run(["pgrep", "-f", pattern], capture_output=True).returncode == 0:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def _pid_gone(pid: int, command: str, within: float = 5.0) -> bool:
    """The process ``pid`` that ran ``command`` has exited (a reused pid running something else is gone)."""
    deadline = time.monotonic() + within
    while True:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return True
        if command not in cmdline:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)


def _hanging_pid(lines: list[str]) -> int:
    """The pid of the child ``sleep 600`` the probe started (it prints ``hanging <pid>``)."""
    return int(next(line.split()[1] for line in lines if line.startswith("hanging ")))


def _container_exists(name: str) -> bool:
    out = subprocess.run(
        ["docker", "ps", "-a", "--filter", f"name=^{name}$", "--format", "{{.Names}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return bool(out.strip())


def test_killing_a_step_stops_processes_and_containers_and_runs_cleanup(bench, probe_image):
    runner = bench.make_runner()
    runner.stop_grace = 30
    name = f"probe-{bench.kind}-kill"
    job = bench.job(mode="hang", PROBE_ID=f"{bench.kind}-kill", PROBE_IMAGE=probe_image)
    result: dict = {"lines": []}
    thread = threading.Thread(
        target=lambda: result.update(outcome=runner.run(job, _lines_into(result["lines"]), lambda: None))
    )
    thread.start()
    deadline = time.monotonic() + 60
    # The step hangs once it printed its child's pid (its container is up before `docker run -d` returns).
    while not any(line.startswith("hanging ") for line in result["lines"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _container_exists(name)
    time.sleep(0.5)

    runner.kill()
    thread.join(timeout=60)

    assert not thread.is_alive()
    assert result["outcome"].signal and result["outcome"].rc == 143
    assert bench.marks.read_text() == "cleanup-ran\n"
    assert not _container_exists(name)
    assert _gone(str(bench.root))
    if bench.kind != "docker":  # in the runner container the pid is the container's; it is gone with it
        assert _pid_gone(_hanging_pid(result["lines"]), "sleep 600")
    assert not _runner_containers(job.key)


def test_a_step_that_ignores_sigterm_is_killed_after_the_grace_and_cleaned_up(bench):
    """The SIGKILL path: the wrapper cannot finish (the step ignores SIGTERM), so after the stop grace
    the runner kills the whole tree, and the runner's own fallback runs the cleanup the wrapper could not:
    ci-cleanup.sh ran, the work tree and job directory are gone, nothing of the step is left."""
    runner = bench.make_runner()
    runner.stop_grace = 3
    job = bench.job(mode="stubborn")
    lines: list[str] = []
    errors: list[Exception] = []

    def run_it() -> None:
        try:
            runner.run(job, _lines_into(lines), lambda: None)
        except RunnerError as err:
            errors.append(err)

    thread = threading.Thread(target=run_it)
    thread.start()
    deadline = time.monotonic() + 60
    while not any(line.startswith("hanging ") for line in lines) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert any(line.startswith("hanging ") for line in lines), lines
    started = time.monotonic()

    runner.kill()
    thread.join(timeout=90)

    assert not thread.is_alive(), "the runner still follows a step killed hard"
    assert time.monotonic() - started >= runner.stop_grace  # SIGTERM alone did not end it
    assert errors and "without a result" in str(errors[0]), (errors, lines[-5:])
    assert bench.marks.read_text() == "cleanup-ran\n"
    if bench.kind != "docker":
        assert _pid_gone(_hanging_pid(lines), "sleep 600")
    assert _gone(str(bench.root))
    assert_nothing_of_the_step_left(bench.root)
    assert not (bench.root / "jobs" / bench.key / "1").exists()
    assert not _runner_containers(bench.key)


def test_a_wrapper_killed_hard_gets_its_cleanup_from_the_runner(bench, probe_image):
    """The hard-kill fallback: the wrapper's process (group, or container) dies by SIGKILL mid-step, so it
    writes no result and runs no cleanup; the runner runs ci-cleanup.sh itself and fails the attempt."""
    runner = bench.make_runner()
    name = f"probe-{bench.kind}-hard"
    job = bench.job(mode="hang", PROBE_ID=f"{bench.kind}-hard", PROBE_IMAGE=probe_image)
    lines: list[str] = []
    errors: list[Exception] = []

    def run_it() -> None:
        try:
            runner.run(job, _lines_into(lines), lambda: None)
        except RunnerError as err:
            errors.append(err)

    thread = threading.Thread(target=run_it)
    thread.start()
    deadline = time.monotonic() + 60
    while not _container_exists(name) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _container_exists(name)
    time.sleep(0.5)
    if bench.kind == "docker":
        subprocess.run(["docker", "kill", f"flatcar-airflow-{job.key}-1"], check=True, capture_output=True)
    else:
        pid = int((bench.root / "jobs" / bench.key / "1" / "pid").read_text())
        os.killpg(pid, signal.SIGKILL)  # the wrapper's own process group (its session), nothing else
    thread.join(timeout=90)

    assert not thread.is_alive(), "the runner still follows a wrapper killed hard"
    assert errors and "without a result" in str(errors[0]), (errors, lines[-5:])
    assert bench.marks.read_text() == "cleanup-ran\n"  # the probe's cleanup also removed its container
    assert not _container_exists(name)
    assert_nothing_of_the_step_left(bench.root)
    assert not (bench.root / "jobs" / bench.key / "1").exists()
    assert not _runner_containers(bench.key)


def test_a_new_attempt_stops_the_earlier_one_still_running(bench, probe_image):
    first = bench.make_runner()
    name = f"probe-{bench.kind}-attempt-1"
    hanging = bench.job(mode="hang", PROBE_ID=f"{bench.kind}-attempt-1", PROBE_IMAGE=probe_image)
    thread = threading.Thread(target=lambda: _swallow(run, first, hanging), daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not _container_exists(name) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _container_exists(name)

    outcome, lines, _ = run(bench.make_runner(), bench.job(attempt=2))

    assert outcome.rc == 0
    assert any("earlier attempt" in line and "1" in line for line in lines)
    thread.join(timeout=60)
    assert not _container_exists(name)
    assert bench.marks.read_text().count("cleanup-ran") == 2
    assert not _runner_containers(bench.key)


def _swallow(function, *args):
    """Run the earlier attempt; it ends stopped by the later one (its outcome does not matter here)."""
    with contextlib.suppress(Exception):
        function(*args)


def _runner_containers(key: str) -> list[str]:
    """Runner containers of this test's job (other sessions' runner containers are theirs)."""
    out = subprocess.run(
        ["docker", "ps", "-a", "--filter", f"label=io.flatcar-airflow.job={key}", "--format", "{{.Names}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.split()


def test_ssh_step_survives_a_dropped_connection(probe_origin, build_cache, tmp_path, monkeypatch):
    from flatcar_airflow.runners.ssh import SSHRunner

    conn = host_connection(build_cache)
    monkeypatch.setenv("AIRFLOW_CONN_PROBE_BUILD_HOST", json.dumps(conn))
    bench = Bench("ssh", tmp_path / "root", probe_origin.url, tmp_path / "marks", None)
    runner = SSHRunner(ssh_conn_id="probe_build_host", root=str(bench.root), poll_interval=0.2)
    job = bench.job(mode="slow", PROBE_SLOW="6")
    result: dict = {}
    thread = threading.Thread(
        target=lambda: result.update(zip(("outcome", "lines", "ticks"), run(runner, job), strict=True))
    )
    thread.start()
    deadline = time.monotonic() + 60
    while not (bench.root / "jobs" / bench.key / "1" / "pid").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1)
    for pid in build_cache.build_host.ssh_session_pids():
        os.kill(pid, signal.SIGKILL)  # the network drops: every ssh session of ours is cut
    thread.join(timeout=120)

    assert result["outcome"].rc == 0
    assert any("lost the connection to the build host" in line for line in result["lines"])
    assert any("reconnected to the build host" in line for line in result["lines"])
    assert "probe done" in result["lines"]
    assert bench.marks.read_text() == "cleanup-ran\n"


#: A task process of its own: makes the bench's runner and runs one job, printing the step's lines.
_TASK_PROCESS = """
import dataclasses, json, sys
from flatcar_airflow.runners.base import Job
spec = json.loads(sys.argv[1])
if spec["kind"] == "docker":
    from flatcar_airflow.runners.docker import DockerRunner
    runner = DockerRunner(image=spec["image"], root=spec["root"])
elif spec["kind"] == "ssh":
    from flatcar_airflow.runners.ssh import SSHRunner
    runner = SSHRunner(ssh_conn_id="probe_build_host", root=spec["root"], poll_interval=0.2)
else:
    from flatcar_airflow.runners.local import LocalRunner
    runner = LocalRunner(root=spec["root"])
runner.run(Job(**spec["job"]), lambda line: print(line, flush=True), lambda: None)
"""


def test_a_task_process_killed_hard_leaves_its_step_to_the_next_attempt(bench, probe_image):
    """Fault drill: the task process (the one that runs the runner) dies by SIGKILL mid-step, so nothing
    of ours stops the step: its wrapper (own session, remote and detached, or a container) runs on. The
    next attempt, in another process, stops it, runs its cleanup, and completes; afterwards nothing of the
    step is left: no container, no process, no work tree, no job directory."""
    import dataclasses
    import sys

    name = f"probe-{bench.kind}-sigkill"
    first = bench.job(mode="hang", PROBE_ID=f"{bench.kind}-sigkill", PROBE_IMAGE=probe_image)
    task = subprocess.Popen(
        [sys.executable, "-c", _TASK_PROCESS, json.dumps({**bench.spec, "job": dataclasses.asdict(first)})],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(task.stdout), daemon=True)
    reader.start()
    deadline = time.monotonic() + 90
    while not _container_exists(name) and time.monotonic() < deadline and task.poll() is None:
        time.sleep(0.2)
    assert _container_exists(name), lines[-10:]
    time.sleep(1)
    task.kill()  # SIGKILL: no on_kill, no cleanup, no goodbye
    task.wait(timeout=30)
    reader.join(timeout=30)
    time.sleep(1)
    assert _container_exists(name), "the step stopped with its task process: this drill proves nothing"
    if bench.kind != "docker":
        hanging = _hanging_pid([line.strip() for line in lines])
        assert not _pid_gone(hanging, "sleep 600", within=0.1)

    outcome, later, _ = run(bench.make_runner(), bench.job(attempt=2))

    assert outcome.rc == 0 and "probe done" in later
    assert any("earlier attempt" in line and "1" in line for line in later), later
    assert not _container_exists(name)
    if bench.kind != "docker":
        assert _pid_gone(hanging, "sleep 600")
    assert bench.marks.read_text() == "cleanup-ran\ncleanup-ran\n"  # the killed attempt's cleanup too
    assert _gone(str(bench.root))
    assert_nothing_of_the_step_left(bench.root)
    assert not (bench.root / "jobs" / bench.key / "1").exists()
    assert not (bench.root / "jobs" / bench.key / "2").exists()
    assert not _runner_containers(bench.key)


def _restart_sshd(host, down: float) -> None:
    """The build host's sshd goes away (the listener and every session of it) for ``down`` seconds, then
    starts again on the same port with the same keys, as after a restart or reboot of the service."""
    sessions = host.ssh_session_pids()
    host.stop()
    for pid in sessions:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    time.sleep(down)
    directory = host.key_file.parent
    host.proc = subprocess.Popen(
        ["/usr/sbin/sshd", "-D", "-f", str(directory / "sshd_config"), "-E", str(directory / "sshd.log")],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host.server, host.port), timeout=1):
            return
        time.sleep(0.1)
    raise AssertionError("the build host's sshd did not come back")


def test_ssh_build_host_sshd_restarted_mid_step(probe_origin, build_cache, tmp_path, monkeypatch):
    """Fault drill: the build host's sshd restarts mid-step. Down for longer than ``reconnect_timeout``,
    the attempt fails cleanly, naming the lost connection, while the step runs on there; the retry stops
    that step before its own starts (one copy at a time) and, through a shorter restart of its own
    (within the timeout), reconnects and completes."""
    conn = host_connection(build_cache)
    monkeypatch.setenv("AIRFLOW_CONN_PROBE_BUILD_HOST", json.dumps(conn))
    bench = Bench("ssh", tmp_path / "root", probe_origin.url, tmp_path / "marks", None)
    runs = tmp_path / "runs"
    impatient = SSHRunner(ssh_conn_id="probe_build_host", root=str(bench.root), poll_interval=0.2)
    impatient.reconnect_timeout = 2
    errors: list[Exception] = []
    lines: list[str] = []

    def first() -> None:
        try:
            impatient.run(bench.job(mode="slow", PROBE_SLOW="30", PROBE_RUNS=str(runs), PROBE_RUN="1"),
                          lines.append, lambda: None)  # fmt: skip
        except RunnerError as err:
            errors.append(err)

    thread = threading.Thread(target=first)
    thread.start()
    deadline = time.monotonic() + 60
    while "start 1" not in (runs.read_text() if runs.exists() else "") and time.monotonic() < deadline:
        time.sleep(0.1)
    _restart_sshd(build_cache.build_host, down=5)
    thread.join(timeout=60)

    assert not thread.is_alive()
    assert errors and "lost the connection to the build host for over 2 s" in str(errors[0]), (errors, lines)
    assert "the retry stops it before starting again" in str(errors[0])
    assert runs.read_text() == "start 1\n"  # it still runs on the host

    patient = SSHRunner(ssh_conn_id="probe_build_host", root=str(bench.root), poll_interval=0.2)
    result: dict = {}
    job = bench.job(attempt=2, mode="slow", PROBE_SLOW="6", PROBE_RUNS=str(runs), PROBE_RUN="2")

    def second() -> None:
        result["outcome"], result["lines"], _ = run(patient, job)

    retry = threading.Thread(target=second)
    retry.start()
    deadline = time.monotonic() + 60
    while "start 2" not in runs.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    _restart_sshd(build_cache.build_host, down=2)
    retry.join(timeout=120)

    assert result["outcome"].rc == 0, result["lines"][-10:]
    later = result["lines"]
    assert any("stopping an earlier attempt of this step (1" in line for line in later), later
    assert any("lost the connection to the build host" in line for line in later)
    assert any("reconnected to the build host" in line for line in later)
    assert runs.read_text() == "start 1\nend 1\nstart 2\nend 2\n"  # one at a time, each once
    assert not (bench.root / "jobs" / bench.key / "1").exists()
    assert_nothing_of_the_step_left(bench.root)
