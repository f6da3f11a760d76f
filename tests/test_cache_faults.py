"""Fault drills of the build cache: unreachable for a while, then for good; its disk full.

A build cache server of its own (the project's, flatcar_airflow.buildcache_server: sshd + rrsync writes,
nginx HTTPS reads) whose data directory is a 2 MiB tmpfs this module mounts, on a loopback address of its
own: stopping it or filling its disk never disturbs the session's cache.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from infra import _https_address, _start_cache_service

from flatcar_airflow.failures import diagnose
from flatcar_airflow.hooks.buildcache import BuildCacheHook, BuildCacheUnreachable

CONN = "flatcar_buildcache_drill"
MINI_COMMON = Path(__file__).parents[1] / "examples/mini-scripts/ci-automation/ci_automation_common.sh"


@dataclass
class DrillCache:
    service: object
    data: Path
    address: str
    ssh_port: int
    shim_dir: Path

    def connection(self, **extra) -> dict:
        return {
            "conn_type": "flatcar_buildcache",
            "host": self.address,
            "port": self.ssh_port,
            "login": self.service.settings().user,
            "extra": {
                "path_prefix": str(self.data),
                "private_key": self.service.writer_key.read_text(),
                "http_url": f"https://{self.address}",
                "ca_bundle": self.service.ca_file.read_text(),
                "host_key": self.service.host_key(),
                **extra,
            },
        }

    def hook(self, monkeypatch, **extra) -> BuildCacheHook:
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN.upper()}", json.dumps(self.connection(**extra)))
        return BuildCacheHook(CONN)

    def outage(self, seconds: float) -> threading.Timer:
        """Stop the cache (sshd and nginx) now; start it again after ``seconds``."""
        self.service.stop()
        timer = threading.Timer(seconds, self.service.start)
        timer.start()
        return timer


@pytest.fixture(scope="module")
def drill_cache(tmp_path_factory):
    base = tmp_path_factory.mktemp("drill-cache")
    data = base / "data"
    data.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", str(data)], check=True)
    service = None
    try:
        address = _https_address()
        service = _start_cache_service_on(base / "state", address, data)
        settings = service.settings()
        # The scripts' ssh takes port and key from the user's ssh setup: an ssh first in PATH gives them.
        config = base / "ssh_config"
        config.write_text(
            f"Host {address}\n    Port {settings.ssh_port}\n    IdentityFile {service.writer_key}\n"
            "    IdentitiesOnly yes\n    LogLevel ERROR\n"
        )
        shim = base / "shim"
        shim.mkdir()
        (shim / "ssh").write_text(f"#!/bin/sh\nexec {shutil.which('ssh')} -F '{config}' \"$@\"\n")
        (shim / "ssh").chmod(0o755)
        yield DrillCache(service, data, address, settings.ssh_port, shim)
    finally:
        if service is not None:
            service.stop()
        subprocess.run(["umount", "-l", str(data)], check=False)


def _start_cache_service_on(state: Path, address: str, data: Path):
    """infra's cache service start (free ports, retried), with the data directory on the tmpfs."""
    service = _start_cache_service(state, address)
    service.stop()
    settings = service.settings()
    settings.data = str(data)
    service.init(settings)
    service.start()
    return service


@pytest.fixture
def fresh(drill_cache):
    """Each drill starts with the cache up and its disk empty."""
    if not drill_cache.service.pids:
        drill_cache.service.start()
    for entry in drill_cache.data.iterdir():
        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    yield drill_cache
    if len(drill_cache.service.pids) < 2:
        drill_cache.service.stop()
        drill_cache.service.start()


def _retry_lines(capfd) -> list[str]:
    """The hook's "…failed: <cause>; attempt N of M in S s" warnings printed since the last call."""
    captured = capfd.readouterr()
    return [line for line in (captured.out + captured.err).splitlines() if "; attempt " in line]


def test_a_cache_unreachable_for_a_while_is_waited_for_then_named(fresh, monkeypatch, capfd):
    """Checks, reads and writes wait through an outage (bounded retries, doubling wait); when the cache
    stays away they fail within the configured patience, naming the cache, the attempts and the cause."""
    hook = fresh.hook(monkeypatch, retries=4, retry_wait=1)
    assert hook.upload("drill/a.txt", b"a\n").endswith("/drill/a.txt")

    for action in (
        lambda: hook.check(["drill/a.txt", "drill/missing"]),
        lambda: hook.read_text("drill/a.txt"),
        lambda: hook.upload("drill/b.txt", b"b\n"),
    ):
        _retry_lines(capfd)
        timer = fresh.outage(2.5)
        result = action()
        timer.join()
        waited = _retry_lines(capfd)
        assert waited and "Connection refused" in waited[0], "the outage was not waited for"
        assert result is not None
    assert (fresh.data / "drill/b.txt").read_bytes() == b"b\n"
    found = hook.check(["drill/a.txt", "drill/missing"])
    assert found["drill/a.txt"].exists and not found["drill/missing"].exists  # a 404 is an answer

    # Refusals are no outage: an untrusted certificate fails at once (and so does a 404 above).
    untrusted = fresh.hook(monkeypatch, retries=4, retry_wait=2, ca_bundle="")
    started = time.monotonic()
    # (checks go over the standard library's client, reads over httpx: docs/benchmarks.md)
    with pytest.raises(RuntimeError, match="CERTIFICATE_VERIFY_FAILED"):
        untrusted.check(["drill/a.txt"])
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        untrusted.read_text("drill/a.txt")
    assert time.monotonic() - started < 5 and not _retry_lines(capfd)

    patient = fresh.hook(monkeypatch, retries=2, retry_wait=0.5)
    fresh.service.stop()
    for action, where, what in (
        (lambda: patient.check(["drill/a.txt"]), f"https://{fresh.address}", "checking drill/a.txt"),
        (lambda: patient.read_text("drill/a.txt"), f"https://{fresh.address}", "reading drill/a.txt"),
        (lambda: patient.upload("drill/c.txt", b"c\n"), f"port {fresh.ssh_port}", "mkdir -p for drill/c.txt"),
    ):
        started = time.monotonic()
        with pytest.raises(BuildCacheUnreachable) as err:
            action()
        message = str(err.value)
        assert message.startswith(f"the build cache {CONN!r} (")
        assert where in message and f"{what} failed 3 time(s)" in message, message
        assert "retries" in message and "retry_wait" in message
        assert time.monotonic() - started < 30  # 0.5 + 1 s of waits, plus the attempts themselves
    assert not (fresh.data / "drill/c.txt").exists()


def test_a_bad_retry_setting_is_named(monkeypatch):
    bad = {
        "conn_type": "flatcar_buildcache",
        "host": "cache.example",
        "login": "bincache",
        "extra": {"path_prefix": "/srv/cache", "retries": "many", "retry_wait": -1},
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN.upper()}", json.dumps(bad))
    with pytest.raises(ValueError) as err:
        _ = BuildCacheHook(CONN).settings
    assert "extra 'retries' 'many' must be a whole number" in str(err.value)
    assert "extra 'retry_wait' '-1' must be seconds" in str(err.value)


def _fill(data: Path, leave: int) -> None:
    """Fill the cache's disk but ``leave`` bytes."""
    stat = os.statvfs(data)
    free = stat.f_bavail * stat.f_frsize
    (data / "filler").write_bytes(b"\0" * max(free - leave, 0))


def test_a_full_cache_disk_is_named_and_our_writes_leave_no_truncated_file(fresh, monkeypatch, capfd):
    """Our own write (a manifest) into a full cache fails at once (no retries: waiting does not free
    space) saying "disk full on the build cache", and nothing is left under its name or a temporary
    one. A step's upload (the scripts' copy_to_buildcache) failing the same way is diagnosed as the
    cache's full disk, not the build host's."""
    hook = fresh.hook(monkeypatch, retries=4, retry_wait=2)
    hook.upload("drill/manifest.json", b"{}\n")  # the directory exists; the old manifest is there
    _fill(fresh.data, 64 * 1024)

    started = time.monotonic()
    with pytest.raises(RuntimeError) as err:
        hook.upload("drill/manifest.json", b"x" * 1_000_000)
    assert time.monotonic() - started < 10 and not _retry_lines(capfd)
    assert "disk full on the build cache" in str(err.value).splitlines()[0]
    assert "No space left on device" in str(err.value) or "exit status 11, no message" in str(err.value)
    assert (fresh.data / "drill/manifest.json").read_bytes() == b"{}\n"  # the old file, whole
    assert sorted(p.name for p in (fresh.data / "drill").iterdir()) == ["manifest.json"]

    # A step's upload, as the scripts do it (rsync --partial into BUILDCACHE_PATH_PREFIX).
    work = fresh.data.parent / "step"
    work.mkdir(exist_ok=True)
    (work / "flatcar_production_image.bin.bz2").write_bytes(os.urandom(1_000_000))
    env = {
        **os.environ,
        "PATH": f"{fresh.shim_dir}{os.pathsep}{os.environ['PATH']}",
        "BUILDCACHE_SERVER": fresh.address,
        "BUILDCACHE_USER": fresh.service.settings().user,
        "BUILDCACHE_PATH_PREFIX": str(fresh.data),
    }
    step = subprocess.run(
        [
            "bash",
            "-c",
            f"source {MINI_COMMON} && copy_to_buildcache images/amd64/1.0 flatcar_production_image.bin.bz2",
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    assert step.returncode != 0
    lines = (step.stdout + step.stderr).splitlines()
    failure = diagnose(lines, step.returncode, cache_prefix=str(fresh.data))
    assert failure.kind == "disk-full", lines
    assert failure.summary.startswith("disk full on the build cache"), failure
    assert "No space left on device" in failure.line
    local = 'rsync: [receiver] write failed on "/var/tmp/x/image.bin": No space left on device (28)'
    assert diagnose([local], 11, cache_prefix=str(fresh.data)).summary == "disk full on the build host"
    # What the scripts' rsync --partial leaves: a truncated file under the artifact's own name. The step
    # failed, so no XCom references it; a retry of the step runs it again instead of reusing its outputs
    # (operators/step.py), which rewrites the file.
    partial = fresh.data / "images/amd64/1.0/flatcar_production_image.bin.bz2"
    assert partial.stat().st_size < 1_000_000
