"""Benchmark: existence checks of 200 artifacts in the build cache.

The project's cache service (``flatcar-airflow buildcache``: nginx for HTTPS reads, HTTP/1.1 with
keep-alive) on loopback, with ``--files`` artifacts (default 200, half of them present). Measured in
turn (hook, ssh, hook, ssh, …):

* ``BuildCacheHook.check`` of all paths (what the pipelines use: one call, a new client each time,
  TLS handshakes included, as in a task);
* the baseline: one ssh round trip running ``test -e`` for every path (a plain sshd on loopback with a
  key made for the run: the cache's own sshd lets its key only rsync and mkdir);
* for comparison, fewer runs: one ``curl --head`` process per file, what the scripts do.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from .common import Figure, Samples, free_port, paired, say, timed

CONN_ID = "flatcar_buildcache_bench"
GOAL_S = 0.3


class PlainSshd:
    """An sshd on loopback that lets one key made for the run run any command (the baseline's host)."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.port = free_port()
        self.key = work / "id_ed25519"
        host_key = work / "host_ed25519"
        for key in (self.key, host_key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        (work / "authorized_keys").write_text(self.key.with_suffix(".pub").read_text())
        os.chmod(work / "authorized_keys", 0o600)
        config = work / "sshd_config"
        config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {host_key}\n"
            f"AuthorizedKeysFile {work / 'authorized_keys'}\nPasswordAuthentication no\n"
            f"StrictModes no\nPidFile {work / 'sshd.pid'}\nUsePAM no\n"
        )
        sshd = shutil.which("sshd") or "/usr/sbin/sshd"
        self.proc = subprocess.Popen(
            [sshd, "-D", "-e", "-f", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=(work / "sshd.log").open("wb"),
            start_new_session=True,
        )
        deadline = time.monotonic() + 20
        while self.run("true").returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the baseline's sshd did not start: {(work / 'sshd.log').read_text()[-2000:]}"
                )
            time.sleep(0.2)

    def run(self, command: str) -> subprocess.CompletedProcess:
        user = os.environ.get("USER") or "root"
        return subprocess.run(
            ["ssh", "-p", str(self.port), "-i", str(self.key), "-o", "BatchMode=yes",
             "-o", "StrictHostKeyChecking=no", "-o", f"UserKnownHostsFile={self.work / 'known_hosts'}",
             "-o", "LogLevel=ERROR", f"{user}@127.0.0.1", command],
            capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False, timeout=60,
        )  # fmt: skip

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def make_artifacts(data: Path, count: int) -> list[str]:
    """``count`` paths shaped like a build's artifacts; every second one is written into the cache."""
    paths = []
    for n in range(count):
        path = f"images/amd64/4593.2.{n // 20}/flatcar_production_{n % 20:02d}.bin.bz2"
        paths.append(path)
        if n % 2 == 0:
            (data / path).parent.mkdir(parents=True, exist_ok=True)
            (data / path).write_bytes(b"x" * (100 + n))
    return paths


def nginx_protocol(url: str, ca_file: Path) -> str:
    """What the cache answers a request with (HTTP/1.1 and keep-alive, or not)."""
    out = subprocess.run(
        ["curl", "-sS", "--head", "-o", "/dev/null", "-o", "/dev/null",
         "-w", "%{http_version} %{num_connects}\\n",
         "--cacert", str(ca_file), url, url],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    answers = [line.split() for line in out.stdout.splitlines() if line.strip()]
    if len(answers) != 2:
        return "no answer"
    reused = answers[1][1] == "0"
    return f"HTTP/{answers[0][0]}, keep-alive {'on' if reused else 'off'}"


def run(smoke: bool = False, files: int = 200) -> list[Figure]:
    from flatcar_airflow.buildcache_server import BuildCacheServer, Settings

    files = 10 if smoke else files
    runs = 2 if smoke else 15
    curl_runs = 1 if smoke else 3
    work = Path(tempfile.mkdtemp(prefix="flatcar-bench-buildcache-"))
    service = BuildCacheServer(work / "buildcache")
    sshd = None
    saved = os.environ.get(f"AIRFLOW_CONN_{CONN_ID.upper()}")
    try:
        service.init(Settings(server="127.0.0.1", ssh_port=free_port(), https_port=free_port()))
        service.start()
        os.environ[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = json.dumps(service.connection())
        paths = make_artifacts(service.data, files)
        sshd = PlainSshd(work)
        from flatcar_airflow.hooks.buildcache import BuildCacheHook

        hook = BuildCacheHook(CONN_ID)
        url = hook.settings.http_url
        protocol = nginx_protocol(f"{url}/{paths[0]}", service.ca_file)
        say(f"buildcache: {files} paths, {runs} pairs (cache answers {protocol})")
        checked = hook.check(paths)
        present = sum(entry.exists for entry in checked.values())
        if present != (files + 1) // 2:
            raise RuntimeError(f"the hook found {present} of {(files + 1) // 2} artifacts")
        tests = " ".join(f"test -e {shlex.quote(str(service.data / p))} && echo 1 || echo 0;" for p in paths)
        if sshd.run(tests).stdout.split().count("1") != present:
            raise RuntimeError("the ssh baseline sees other files than the hook")

        def ssh_checks() -> None:
            sshd.run(tests)

        def hook_checks() -> None:
            BuildCacheHook(CONN_ID).check(paths)

        hook_s, ssh_s, ratio = paired(timed(hook_checks), timed(ssh_checks), runs)
        curl = [
            str(shutil.which("curl")),
            "-s",
            "-o",
            "/dev/null",
            "--head",
            "--cacert",
            str(service.ca_file),
        ]

        def curl_checks() -> None:
            for path in paths:
                subprocess.run([*curl, f"{url}/{path}"], check=False, stdin=subprocess.DEVNULL)

        curl_s = Samples([timed(curl_checks)() for _ in range(curl_runs)])
    finally:
        if saved is None:
            os.environ.pop(f"AIRFLOW_CONN_{CONN_ID.upper()}", None)
        else:
            os.environ[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = saved
        if sshd is not None:
            sshd.stop()
        service.stop()
        shutil.rmtree(work, ignore_errors=True)
    common = {"benchmark": "buildcache", "unit": "s", "runs": runs}
    return [
        Figure(
            **common,
            name=f"build cache: BuildCacheHook.check of {files} artifacts over HTTPS ({protocol})",
            value=round(hook_s.median, 4),
            minimum=round(hook_s.min, 4),
            baseline=f"one ssh round trip with {files} `test -e`",
            baseline_value=round(ssh_s.median, 4),
            ratio=round(ratio, 2),
            goal=f"< {GOAL_S} s",
            met=hook_s.median < GOAL_S,
            extra={"ssh_min": round(ssh_s.min, 4), "present": present},
        ),
        Figure(
            benchmark="buildcache",
            name=f"build cache: one curl --head process per file ({files} files, the scripts' way)",
            value=round(curl_s.median, 4),
            minimum=round(curl_s.min, 4),
            unit="s",
            runs=curl_runs,
            baseline="BuildCacheHook.check (above)",
            baseline_value=round(hook_s.median, 4),
            ratio=round(curl_s.median / hook_s.median, 2),
        ),
    ]
