"""Runners against real processes, git and docker: a probe step in a real scripts-like origin.

The probe step reports what a Flatcar step would see (its arguments, origin/main, the build cache
settings, whether git sees a clean tree, whether stdin is closed), registers a cleanup, and can fail,
ask to skip, run slowly, or hang with a child process and a container for the kill tests.
"""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pytest
from gitrepos import commit_file, git, make_origins

from flatcar_airflow.runners.base import Job
from flatcar_airflow.runners.local import LocalRunner

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
    mkdir -p images/latest __TESTS__/qemu
    echo data > images/latest/flatcar_production_image.bin.bz2
    printf '1..2\nok 1 - cl.basic\nnot ok 2 - cl.network\n' > __TESTS__/qemu/results-qemu.tap
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


def probe_job(origin, tmp_path, *args, mode="ok", attempt=1, key="probe-job", **env) -> Job:
    marks = tmp_path / "marks"
    return Job(
        key=key,
        attempt=attempt,
        origin=origin.url,
        ref="main-4799.0.0-probe",
        script="ci-automation/probe.sh",
        function="probe",
        args=list(args),
        env={"PROBE_MODE": mode, "PROBE_MARKS": str(marks), "BUILDCACHE_SERVER": "cache.example", **env},
        cache={"server": "cache.example", "user": "builder", "path_prefix": "/srv/cache dir"},
    )


def run(runner, job):
    lines: list[str] = []
    ticks = [0]
    outcome = runner.run(job, lines.append, lambda: ticks.__setitem__(0, ticks[0] + 1))
    return outcome, lines, ticks[0]


def test_local_runner_runs_the_step_as_the_scripts_expect(probe_origin, tmp_path):
    runner = LocalRunner(root=str(tmp_path / "root"))
    hostile = "a b'c\"$(touch /tmp/pwned-by-arg)`id`"
    outcome, lines, _ = run(runner, probe_job(probe_origin, tmp_path, "amd64", hostile))

    assert outcome.rc == 0 and not outcome.skip_build and not outcome.signal
    assert "args:2" in lines and "arg=<amd64>" in lines and f"arg=<{hostile}>" in lines
    assert not Path("/tmp/pwned-by-arg").exists()
    assert f"origin-main={probe_origin.head('main')}" in lines
    assert "cache=builder@cache.example:/srv/cache dir" in lines
    assert "tree-clean" in lines  # the cache override is hidden from git
    assert "stdin-closed" in lines
    assert (tmp_path / "marks").read_text() == "cleanup-ran\n"
    assert outcome.images == [("flatcar_production_image.bin.bz2", 5)]
    assert "not ok 2 - cl.network" in outcome.tap["results-qemu.tap"]
    # work tree and job directory are gone; the mirror stays for the next step
    assert list((tmp_path / "root" / "workspaces").iterdir()) == []
    assert not (tmp_path / "root" / "jobs" / "probe-job" / "1").exists()
    assert len(list((tmp_path / "root" / "mirrors").glob("*.git"))) == 1


def test_local_runner_reports_failure_and_skip_build_and_still_cleans_up(probe_origin, tmp_path):
    runner = LocalRunner(root=str(tmp_path / "root"))
    failed, lines, _ = run(runner, probe_job(probe_origin, tmp_path, mode="fail"))
    assert failed.rc == 3 and "failing" in lines
    skipped, _, _ = run(runner, probe_job(probe_origin, tmp_path, mode="skip"))
    assert skipped.rc == 0 and skipped.skip_build
    assert (tmp_path / "marks").read_text() == "cleanup-ran\ncleanup-ran\n"


def test_local_runner_ticks_while_the_step_is_quiet(probe_origin, tmp_path):
    _, _, ticks = run(
        LocalRunner(root=str(tmp_path / "root")), probe_job(probe_origin, tmp_path, mode="slow")
    )
    assert ticks >= 3


def _gone(pattern: str) -> bool:
    return subprocess.run(["pgrep", "-f", pattern], capture_output=True).returncode != 0


def _container_exists(name: str) -> bool:
    out = subprocess.run(
        ["docker", "ps", "-a", "--filter", f"name=^{name}$", "--format", "{{.Names}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return bool(out.strip())


def test_killing_a_local_step_stops_processes_and_containers_and_runs_cleanup(
    probe_origin, probe_image, tmp_path
):
    runner = LocalRunner(root=str(tmp_path / "root"))
    runner.stop_grace = 30
    job = probe_job(probe_origin, tmp_path, mode="hang", PROBE_ID="local-kill", PROBE_IMAGE=probe_image)
    result: dict = {}
    thread = threading.Thread(
        target=lambda: result.update(zip(("outcome", "lines", "ticks"), run(runner, job), strict=True))
    )
    thread.start()
    deadline = time.monotonic() + 60
    while not _container_exists("probe-local-kill") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _container_exists("probe-local-kill")
    time.sleep(0.5)

    runner.kill()
    thread.join(timeout=60)

    assert not thread.is_alive()
    assert result["outcome"].signal and result["outcome"].rc == 143
    assert (tmp_path / "marks").read_text() == "cleanup-ran\n"
    assert not _container_exists("probe-local-kill")
    assert _gone(str(tmp_path / "root"))
    assert _gone("sleep 600")


def test_a_new_attempt_stops_the_earlier_one_still_running(probe_origin, probe_image, tmp_path):
    root = str(tmp_path / "root")
    first = LocalRunner(root=root)
    hanging = probe_job(probe_origin, tmp_path, mode="hang", PROBE_ID="attempt-1", PROBE_IMAGE=probe_image)
    thread = threading.Thread(target=lambda: run(first, hanging), daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not _container_exists("probe-attempt-1") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _container_exists("probe-attempt-1")

    outcome, lines, _ = run(LocalRunner(root=root), probe_job(probe_origin, tmp_path, attempt=2))

    assert outcome.rc == 0
    assert any("stopping an earlier attempt of this step (1" in line for line in lines)
    thread.join(timeout=60)
    assert not _container_exists("probe-attempt-1")
    assert (tmp_path / "marks").read_text().count("cleanup-ran") == 2
