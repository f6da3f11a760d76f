"""The project's build cache server (flatcar_airflow.buildcache_server), for real: sshd + rrsync + nginx.

What an operator relies on: the write key of the flatcar_buildcache connection can do nothing but what the
scripts do (mkdir -p and rsync under the cache directory, and the garbage collector's ls, rm -rf
and rmdir of version directories), reads are HTTPS only and read-only, and the
keys and CA survive a restart.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from flatcar_airflow.buildcache_server import BuildCacheServer, ServerError, Settings
from flatcar_airflow.buildcache_server.cli import main as buildcache_main


def _ssh(cache, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["ssh", "-F", str(cache.ssh_config), f"{cache.user}@{cache.server}", *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )


def _rsync(cache, *args: str) -> subprocess.CompletedProcess:
    ssh = f"ssh -F {cache.ssh_config}"
    return subprocess.run(
        ["rsync", "-a", "-e", ssh, *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )


@pytest.mark.parametrize(
    "command",
    [
        "id",
        "sh -c 'touch /tmp/pwned'",
        "rm -rf /",
        "mkdir -p /tmp/flatcar-airflow-pwned",
        "mkdir -p {root}/../flatcar-airflow-pwned",
        "mkdir -p {root}/x;touch /tmp/flatcar-airflow-pwned",
        "mkdir -p -m 777 {root}/x",
        "mkdir -p '{root}/x'",
        "mkdir -p {root}/$(touch /tmp/flatcar-airflow-pwned)",
        "cat /etc/shadow",
        "internal-sftp",
        "/usr/lib/openssh/sftp-server",
        "scp -t {root}",
    ],
)
def test_the_write_key_can_do_nothing_but_rsync_and_mkdir_under_the_cache(build_cache, command):
    command = command.format(root=build_cache.root)
    proc = _ssh(build_cache, command)
    assert proc.returncode != 0, proc
    assert "flatcar-airflow build cache: refused" in proc.stderr
    assert not Path("/tmp/flatcar-airflow-pwned").exists()
    assert not (build_cache.root.parent / "flatcar-airflow-pwned").exists()
    assert not (build_cache.root / "x").exists()


def test_no_interactive_shell_and_no_sftp(build_cache):
    shell = subprocess.run(
        ["ssh", "-F", str(build_cache.ssh_config), "-tt", f"{build_cache.user}@{build_cache.server}"],
        capture_output=True,
        text=True,
        input="touch /tmp/flatcar-airflow-pwned\nexit\n",
        timeout=60,
    )
    said = shell.stdout + shell.stderr
    assert shell.returncode != 0
    assert "refused an interactive shell" in said or "PTY allocation request failed" in said, said
    assert not Path("/tmp/flatcar-airflow-pwned").exists()
    sftp = subprocess.run(
        ["sftp", "-F", str(build_cache.ssh_config), "-b", "-", f"{build_cache.user}@{build_cache.server}"],
        capture_output=True,
        text=True,
        input="put /etc/hostname /tmp/flatcar-airflow-pwned\n",
        timeout=60,
    )
    assert sftp.returncode != 0
    assert not Path("/tmp/flatcar-airflow-pwned").exists()


def test_what_the_scripts_do_works_and_nothing_leaves_the_cache(build_cache, tmp_path):
    artifact = tmp_path / "flatcar_production_image.bin.bz2"
    artifact.write_bytes(b"image")
    remote = f"{build_cache.root}/images/amd64/1.2.3+test"
    assert _ssh(build_cache, f"mkdir -p {remote}").returncode == 0
    login = f"{build_cache.user}@{build_cache.server}"
    target = f"{login}:{remote}"
    assert _rsync(build_cache, "--partial", str(artifact), target).returncode == 0
    assert build_cache.fetch("images/amd64/1.2.3+test/flatcar_production_image.bin.bz2") == b"image"
    # Reads back with rsync (copy_dir_from_buildcache) work, of cache paths only.
    back = tmp_path / "back"
    assert (
        _rsync(build_cache, f"{build_cache.user}@{build_cache.server}:{remote}/", str(back)).returncode == 0
    )
    assert (back / artifact.name).read_bytes() == b"image"
    outside = _rsync(
        build_cache, f"{build_cache.user}@{build_cache.server}:/etc/hostname", str(tmp_path / "h")
    )
    assert outside.returncode != 0 and not (tmp_path / "h").exists()
    # Writes to absolute paths elsewhere land nowhere outside the cache; deletions are refused.
    _rsync(build_cache, str(artifact), f"{login}:/tmp/flatcar-airflow-pwned")
    assert not Path("/tmp/flatcar-airflow-pwned").exists()
    (tmp_path / "empty").mkdir()
    delete = _rsync(build_cache, "--delete", f"{tmp_path / 'empty'}/", f"{target}/")
    assert delete.returncode != 0
    assert (build_cache.root / "images/amd64/1.2.3+test" / artifact.name).exists()
    build_cache.clear()


@pytest.mark.parametrize(
    "command",
    [
        "rm -rf {root}",
        "rm -rf {root}/",
        "rm -rf {root}/*",
        "rm -rf {root}/images",
        "rm -rf {root}/images/amd64",
        "rm -rf {root}/images/*",
        "rm -rf {root}/flatcar-airflow/builds",
        "rm -rf {root}/flatcar-airflow/builds/main.json",
        "rm -rf {root}/testing/../flatcar-airflow",
        "rm -rf {root}/../gc-outside",
        "rm -rf {root}/images/amd64/link/../../..",
        "rm -rf -- {root}/testing/x",
        "rm -rf {root}/testing/x;touch /tmp/flatcar-airflow-pwned",
        "rm -rf {root}/testing/$(touch /tmp/flatcar-airflow-pwned)",
        "rm -rf {root}/testing/x && touch /tmp/flatcar-airflow-pwned",
        "rm -rf {root}/testing/[a-z]",
        "rmdir {root}/containers",
        "rmdir {root}/containers/*",
        "rm -f {root}/testing/x",
        "ls -la /etc",
        "ls -1 {root}/../gc-outside",
    ],
)
def test_garbage_collection_may_remove_version_directories_only(build_cache, command):
    """The garbage collector's `rm -rf` reaches version directories under the cache, nothing else."""
    keep = [
        "images/amd64/1.2.3+gc/image.bin",
        "testing/x/results.tap",
        "containers/1.2.3-gc/flatcar-sdk-all-1.2.3-gc.tar.zst",
        "flatcar-airflow/builds/main.json",
    ]
    for name in keep:
        build_cache.path(name).parent.mkdir(parents=True, exist_ok=True)
        build_cache.path(name).write_text("keep")
    outside = build_cache.root.parent / "gc-outside"
    outside.mkdir(exist_ok=True)
    (outside / "keep").write_text("keep")
    (build_cache.path("images/amd64/link")).symlink_to(outside)
    try:
        proc = _ssh(build_cache, command.format(root=build_cache.root))
        assert proc.returncode != 0, proc
        assert "flatcar-airflow build cache: refused" in proc.stderr
        assert all(build_cache.path(name).read_text() == "keep" for name in keep)
        assert (outside / "keep").exists()
        assert not Path("/tmp/flatcar-airflow-pwned").exists()
    finally:
        build_cache.clear()


def test_garbage_collection_commands_of_the_scripts_work(build_cache):
    """What garbage_collect.sh sends: ls -la, ls -1, rm -rf with globs, rmdir, each with `|| true`."""
    root = build_cache.root
    files = [
        "images/amd64/1.2.3+gc/a.bin",
        "images/arm64/1.2.3+gc/a.bin",
        "containers/1.2.3-gc/flatcar-sdk-all-1.2.3-gc.tar.zst",
        "containers/1.2.3-gc/flatcar-packages-amd64-1.2.3-gc.tar.zst",
        "testing/1.2.3+gc/amd64/qemu/results.tap",
        "images/amd64/9.9.9+kept/a.bin",
        "flatcar-airflow/builds/main.json",
    ]
    for name in files:
        build_cache.path(name).parent.mkdir(parents=True, exist_ok=True)
        build_cache.path(name).write_text("x")
    outside = root.parent / "gc-outside"
    outside.mkdir(exist_ok=True)
    (outside / "keep").write_text("keep")
    build_cache.path("images/amd64/linked").symlink_to(outside)
    try:
        listing = _ssh(build_cache, f"ls -1 {root}/images/amd64")
        assert listing.returncode == 0 and listing.stdout.split() == ["1.2.3+gc", "9.9.9+kept", "linked"]
        long = _ssh(build_cache, f"ls -la {root}/images/*/1.2.3+gc/ {root}/testing/nothing/ || true")
        assert long.returncode == 0 and "a.bin" in long.stdout
        assert _ssh(build_cache, f"ls -1 {root}/testing/nothing").returncode != 0
        removed = _ssh(
            build_cache,
            f"rm -rf {root}/images/*/1.2.3+gc/ {root}/containers/1.2.3-gc/flatcar-sdk-* "
            f"{root}/containers/1.2.3-gc/flatcar-packages-* {root}/testing/1.2.3+gc/ "
            f"{root}/build-logs/1.2.3+gc/",
        )
        assert removed.returncode == 0, removed
        assert _ssh(build_cache, f"rmdir {root}/containers/1.2.3-gc/ || true").returncode == 0
        # A symlink is removed as the entry it is; what it points at stays.
        assert _ssh(build_cache, f"rm -rf {root}/images/amd64/linked/").returncode == 0
        left = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() or p.is_symlink())
        assert left == ["flatcar-airflow/builds/main.json", "images/amd64/9.9.9+kept/a.bin"]
        assert not build_cache.path("containers/1.2.3-gc").exists()
        assert (outside / "keep").read_text() == "keep"
        # rmdir of a directory that is not empty fails (the scripts add `|| true`).
        assert _ssh(build_cache, f"rmdir {root}/images/amd64/9.9.9+kept").returncode != 0
        assert _ssh(build_cache, f"rmdir {root}/images/amd64/9.9.9+kept || true").returncode == 0
    finally:
        build_cache.clear()


def test_reads_are_https_only_and_read_only(build_cache):
    (build_cache.root / "probe.txt").write_text("probe\n")
    try:
        assert build_cache.head("probe.txt") == 200
        assert build_cache.head("missing.txt") == 404
        context = ssl.create_default_context(cafile=str(build_cache.ca_file))
        for method in ("PUT", "DELETE", "POST"):
            request = urllib.request.Request(build_cache.url("probe.txt"), data=b"x", method=method)  # noqa: S310
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, context=context, timeout=30)  # noqa: S310
            assert refused.value.code in (403, 405)
        assert (build_cache.root / "probe.txt").read_text() == "probe\n"
        with socket.socket() as sock:  # no plain HTTP
            sock.settimeout(2)
            assert sock.connect_ex((build_cache.server, 80)) != 0
        with pytest.raises(urllib.error.URLError):  # a client that does not trust the cache's CA
            urllib.request.urlopen(build_cache.url("probe.txt"), timeout=30)  # noqa: S310
        # Directory listings (the scripts' garbage collector parses them).
        assert b"probe.txt" in build_cache.fetch("")
    finally:
        (build_cache.root / "probe.txt").unlink()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_state_survives_a_restart_and_the_certificate_follows_the_name(tmp_path, capsys):
    state = tmp_path / "cache"
    port = _free_port()
    assert (
        buildcache_main(["--state", str(state), "init", "--server", "127.0.0.1", "--ssh-port", str(port)])
        == 0
    )
    first = json.loads(capsys.readouterr().out)
    assert first["ok"] and first["settings"]["ssh_port"] == port
    server = BuildCacheServer(state)
    keys = {name: (state / "ssh" / name).read_bytes() for name in ("host_ed25519_key", "writer_ed25519")}
    ca = (state / "tls/ca.pem").read_bytes()
    cert = (state / "tls/server.pem").read_bytes()
    # Again, with the same settings: nothing changes.
    assert buildcache_main(["--state", str(state), "init"]) == 0
    assert {name: (state / "ssh" / name).read_bytes() for name in keys} == keys
    assert (state / "tls/server.pem").read_bytes() == cert
    # Another name: a new server certificate from the same CA; the keys stay.
    assert buildcache_main(["--state", str(state), "init", "--server", "127.0.0.9"]) == 0
    capsys.readouterr()
    assert (state / "tls/ca.pem").read_bytes() == ca and (state / "tls/server.pem").read_bytes() != cert
    assert {name: (state / "ssh" / name).read_bytes() for name in keys} == keys
    assert buildcache_main(["--state", str(state), "connection"]) == 0
    connection = json.loads(capsys.readouterr().out)["connection"]
    assert connection["conn_type"] == "flatcar_buildcache" and connection["host"] == "127.0.0.9"
    assert connection["port"] == port and connection["extra"]["path_prefix"] == str(server.data)
    assert connection["extra"]["private_key"] == keys["writer_ed25519"].decode()
    assert connection["extra"]["ca_bundle"] == ca.decode()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (Settings(user="no-such-user-here"), "does not exist"),
        (Settings(ssh_port=70000), "is not a TCP port"),
        (Settings(tls_cert="/etc/hostname"), "tls_cert and tls_key go together"),
    ],
)
def test_bad_settings_are_refused_before_anything_is_made(tmp_path, settings, message):
    with pytest.raises(ServerError, match=message):
        BuildCacheServer(tmp_path / "cache").init(settings)
    assert not (tmp_path / "cache").exists()


def test_several_steps_write_at_once(build_cache, tmp_path):
    """The arches' steps upload concurrently: no write may be refused because another one runs."""
    login = f"{build_cache.user}@{build_cache.server}"
    procs = []
    for n in range(4):
        artifact = tmp_path / f"artifact-{n}.bin"
        artifact.write_bytes(bytes([n]) * 4_000_000)
        remote = f"{build_cache.root}/images/concurrent/{n}"
        assert _ssh(build_cache, f"mkdir -p {remote}").returncode == 0
        ssh = f"ssh -F {build_cache.ssh_config}"
        procs.append(
            subprocess.Popen(
                ["rsync", "-a", "--bwlimit=4000", "-e", ssh, str(artifact), f"{login}:{remote}/"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    try:
        for n, proc in enumerate(procs):
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            assert (build_cache.root / f"images/concurrent/{n}/artifact-{n}.bin").stat().st_size == 4_000_000
    finally:
        build_cache.clear()
