"""Real local infrastructure for tests that run Flatcar build steps (a pytest plugin: ``pytest_plugins``).

Everything runs on this machine and on loopback: the docker engine, the project's build cache server
(``flatcar_airflow.buildcache_server``: rsync over ssh with a restricted write key, HTTPS reads from nginx
with a certificate of its own CA), a plain sshd as the ssh runner's build host, and the demo profile's
SDK and mantle images and bare git origins of the miniature scripts repository in
``examples/mini-scripts`` (``flatcar_airflow.demo``, docs/mini-scripts.md). The processes started here are
stopped when the session ends; dockerd, if it had to be started, is left running like a system service.

Fixtures: ``docker_engine``, ``busybox_image``, ``seed_sdk``, ``released_sdk``, ``build_cache``,
``mini_origin``, ``step_runner``. Helper: :func:`run_step`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import functools
import itertools
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from gitrepos import BRANCH_VERSIONFILE, MAIN_VERSIONFILE, VERSIONFILE
from gitrepos import git as _git

from flatcar_airflow.buildcache_server import BuildCacheServer, ServerError, Settings
from flatcar_airflow.demo import make_demo_images, make_demo_origin, sdk_files
from flatcar_airflow.demo.images import busybox_rootfs, import_image

__all__ = [
    "BRANCH_VERSIONFILE",
    "MAIN_VERSIONFILE",
    "MANTLE_IMAGE",
    "MINI_SCRIPTS",
    "RELEASED_SDK_VERSION",
    "SEED_DOCKER_VERSION",
    "SEED_IMAGE",
    "SEED_VERSION",
    "BuildCache",
    "MiniOrigin",
    "StepResult",
    "docker_containers",
    "make_mini_origin",
    "run_step",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
#: The miniature scripts repository's files.
MINI_SCRIPTS = REPO_ROOT / "examples" / "mini-scripts"
DOCKER_HOST = "unix:///var/run/docker.sock"
#: Test sessions that use the docker engine take turns: they build the same versions, so their containers
#: (flatcar-<step>-<arch>-<version>) and image tags would collide, exactly like the real scripts' on one host.
DOCKER_LOCK = Path(tempfile.gettempdir()) / "flatcar-airflow-tests-docker.lock"
DOCKER_LOCK_WAIT = 540

#: The seed SDK of the bootstrap (version.txt form) and its image.
SEED_VERSION = "4798.0.0+nightly-20260820-2100"
SEED_DOCKER_VERSION = SEED_VERSION.replace("+", "-")
SEED_IMAGE = f"ghcr.io/flatcar/flatcar-sdk-all:{SEED_DOCKER_VERSION}"
#: The mantle image the test step runs its (fake) kola in, as named in sdk_container/.repo/manifests.
MANTLE_IMAGE = (MINI_SCRIPTS / "sdk_container/.repo/manifests/mantle-container").read_text().strip()
#: The released SDK the maintenance branch flatcar-4593 builds with (see ``released_sdk``).
RELEASED_SDK_VERSION = "4593.0.0"

# The build cache this session started (run_step's default).
_SESSION: dict[str, BuildCache] = {}


def _run(
    cmd: list[str], *, check: bool = True, timeout: float = 120, **kwargs
) -> subprocess.CompletedProcess:
    kwargs.setdefault("stdin", subprocess.DEVNULL)
    kwargs.setdefault("text", True)
    if "input" in kwargs and kwargs["stdin"] is subprocess.DEVNULL:
        del kwargs["stdin"]
    proc = subprocess.run(cmd, capture_output=True, timeout=timeout, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


# -- docker ------------------------------------------------------------------------------------------


def _docker_works() -> bool:
    try:
        return _run(["docker", "info"], check=False, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _dangling_images() -> set[str]:
    out = _run(["docker", "images", "--quiet", "--no-trunc", "--filter", "dangling=true"], check=False).stdout
    return set(out.split())


def docker_containers(prefix: str = "flatcar-") -> list[str]:
    """Names of all containers (running or not) whose name starts with ``prefix``."""
    out = _run(["docker", "ps", "--all", "--format", "{{.Names}}"]).stdout
    return sorted(name for name in out.split() if name.startswith(prefix))


def image_id(image: str) -> str:
    """The image id without ``sha256:``, as the scripts write it into ``.id`` files."""
    return (
        _run(["docker", "image", "inspect", "--format", "{{.Id}}", image])
        .stdout.strip()
        .removeprefix("sha256:")
    )


@contextlib.contextmanager
def _docker_session_lock():
    """Hold DOCKER_LOCK (waits up to DOCKER_LOCK_WAIT seconds for another test session to finish)."""
    with DOCKER_LOCK.open("a+") as lock:
        deadline = time.monotonic() + DOCKER_LOCK_WAIT
        announced = False
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not announced:
                    lock.seek(0)
                    holder = lock.read().strip() or "?"
                    sys.stderr.write(
                        f"\n[infra] waiting for the test session {holder} that uses docker ({DOCKER_LOCK})\n"
                    )
                    announced = True
                if time.monotonic() > deadline:
                    pytest.fail(f"another test session held {DOCKER_LOCK} for {DOCKER_LOCK_WAIT} s")
                time.sleep(1)
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()}\n")
        lock.flush()
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def docker_engine():
    """A working docker engine (dockerd is started, and left running, if ``docker info`` fails).

    The session holds a machine-wide lock while it uses docker (see DOCKER_LOCK).
    """
    with _docker_session_lock():
        yield from _docker_engine()


def _docker_engine():
    if not _docker_works():
        if shutil.which("dockerd") is None:
            pytest.fail("docker is not installed (apt-get install docker.io; scripts/run-tests.sh does it)")
        with open("/var/log/dockerd.log", "ab") as log:
            subprocess.Popen(
                ["dockerd", "--host", DOCKER_HOST],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while not _docker_works():
            if time.monotonic() > deadline:
                pytest.fail("dockerd did not answer within 60 s (see /var/log/dockerd.log)")
            time.sleep(0.5)
    dangling_before = _dangling_images()
    yield DOCKER_HOST
    # Images this session re-tagged (re-imported seeds, reloaded step images) are left dangling.
    for image in sorted(_dangling_images() - dangling_before):
        _run(["docker", "image", "rm", image], check=False)


@pytest.fixture(scope="session")
def busybox_image(docker_engine, tmp_path_factory):
    """A function ``make(image, files=None) -> image``: the busybox rootfs (plus files) imported as image."""
    rootfs = busybox_rootfs(tmp_path_factory.mktemp("busybox-rootfs"))
    return functools.partial(import_image, rootfs)


@pytest.fixture(scope="session")
def seed_sdk(busybox_image) -> str:
    """The seed SDK image ``SEED_IMAGE`` and the mantle image ``MANTLE_IMAGE``; returns ``SEED_VERSION``."""
    make_demo_images(MINI_SCRIPTS, force=True)
    return SEED_VERSION


@pytest.fixture(scope="session")
def _released_sdk_tarballs(busybox_image, tmp_path_factory) -> Path:
    """The released SDK's images, made once per session, and their saved tarballs and .id files."""
    version = RELEASED_SDK_VERSION
    saved = tmp_path_factory.mktemp("released-sdk") / "containers" / version
    saved.mkdir(parents=True)
    flavours = (("all", ("amd64-usr", "arm64-usr")), ("amd64", ("amd64-usr",)), ("arm64", ("arm64-usr",)))
    for flavour, boards in flavours:
        image = busybox_image(f"ghcr.io/flatcar/flatcar-sdk-{flavour}:{version}", sdk_files(version, boards))
        tarball = saved / f"flatcar-sdk-{flavour}-{version}.tar.zst"
        save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        _run(["zstd", "-q", "-T0", "-f", "-o", str(tarball)], stdin=save.stdout)
        assert save.wait() == 0, f"docker save {image} failed"
        tarball.chmod(0o644)
        (saved / f"flatcar-sdk-{flavour}-{version}.id").write_text(image_id(image) + "\n")
    return saved


@pytest.fixture
def released_sdk(_released_sdk_tarballs, build_cache) -> str:
    """SDK ``RELEASED_SDK_VERSION`` (what flatcar-4593 builds with), as a release would provide it.

    The images ``ghcr.io/flatcar/flatcar-sdk-{all,amd64,arm64}:4593.0.0`` exist locally (made once per
    session) and, with ``.id`` files, in the build cache's ``containers/4593.0.0/`` (copied there for each
    test that asks, so a cleared cache does not lose them): the scripts' fallback when the registry cannot
    be reached, which is always the case here.
    """
    shutil.copytree(
        _released_sdk_tarballs, build_cache.path(f"containers/{RELEASED_SDK_VERSION}"), dirs_exist_ok=True
    )
    return RELEASED_SDK_VERSION


# -- build cache: sshd + HTTPS --------------------------------------------------------------------------


@dataclass
class BuildHost:
    """A plain sshd on loopback: the ssh runner's build host (this machine, reached as root with a key)."""

    server: str
    port: int
    user: str
    key_file: Path
    host_key: str
    proc: subprocess.Popen = field(repr=False)

    def ssh_session_pids(self) -> list[int]:
        """Pids of the sshd processes serving connections now (children of the listening sshd).

        Kill these, not every ``sshd: root`` on the machine, to cut this session's connections only.
        """
        out = _run(["pgrep", "-P", str(self.proc.pid)], check=False).stdout
        return [int(pid) for pid in out.split()]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@dataclass
class BuildCache:
    """The project's build cache server (flatcar_airflow.buildcache_server) on loopback, as the tests see it:
    rsync/ssh writes into ``root`` with the restricted write key ``key_file``, HTTPS reads of ``root``."""

    root: Path
    server: str
    ssh_port: int
    user: str
    key_file: Path
    host_key: str
    https_url: str
    ca_file: Path
    ssh_config: Path
    ssh_shim_dir: Path
    build_host: BuildHost
    service: BuildCacheServer = field(repr=False)

    def env(self) -> dict[str, str]:
        """What a step needs to use this cache with the (miniature or real) scripts."""
        return {
            "BUILDCACHE_SERVER": self.server,
            "CURL_CA_BUNDLE": str(self.ca_file),
            "PATH": f"{self.ssh_shim_dir}{os.pathsep}{os.environ.get('PATH', os.defpath)}",
        }

    def config_overrides(self) -> str:
        """Lines to append to ci-config.env, which hard-codes BUILDCACHE_PATH_PREFIX and BUILDCACHE_USER."""
        return f"BUILDCACHE_PATH_PREFIX={self.root}\nBUILDCACHE_USER={self.user}\n"

    def url(self, path: str) -> str:
        return f"{self.https_url}/{path.lstrip('/')}"

    def path(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def fetch(self, path: str) -> bytes:
        """GET a cache path over HTTPS (raises urllib.error.HTTPError for 404 and friends)."""
        with urllib.request.urlopen(self.url(path), context=self.ssl_context(), timeout=30) as response:  # noqa: S310
            return response.read()

    def head(self, path: str) -> int:
        """HTTP status of a HEAD request for a cache path."""
        request = urllib.request.Request(self.url(path), method="HEAD")  # noqa: S310
        try:
            with urllib.request.urlopen(request, context=self.ssl_context(), timeout=30) as response:  # noqa: S310
                return response.status
        except urllib.error.HTTPError as error:
            return error.code

    def clear(self) -> None:
        """Remove every artifact (tests that build the same versions must not see each other's)."""
        for entry in self.root.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()

    def ssh(self, command: str) -> subprocess.CompletedProcess:
        """Run a command on the cache host with the write key, as the build steps' ssh does."""
        return _run(["ssh", "-F", str(self.ssh_config), f"{self.user}@{self.server}", command], check=False)

    def stop(self) -> None:
        self.build_host.stop()
        self.service.stop()


def _free_port(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


def _https_address() -> str:
    """A loopback address whose port 443 is free (127.0.0.1 unless another session holds it)."""
    for last in range(1, 40):
        address = f"127.0.0.{last}"
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((address, 443))
            except OSError:
                continue
            return address
    pytest.fail("no loopback address with a free port 443 for the build cache's HTTPS server")


def _wait_for_port(address: str, port: int, proc: subprocess.Popen, what: str, log: Path) -> None:
    deadline = time.monotonic() + 20
    while True:
        if proc.poll() is not None:
            raise RuntimeError(
                f"{what} exited ({proc.returncode}): {log.read_text(errors='replace')[-2000:]}"
            )
        with socket.socket() as sock:
            sock.settimeout(1)
            if sock.connect_ex((address, port)) == 0:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{what} does not listen on {address}:{port}: {log.read_text(errors='replace')[-2000:]}"
            )
        time.sleep(0.1)


def _start_build_host(directory: Path, address: str) -> BuildHost:
    """A plain sshd (root login with a key of its own) standing in for an ssh runner's build host."""
    directory.mkdir(parents=True)
    host_key, key_file = directory / "ssh_host_ed25519_key", directory / "id_ed25519"
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)])
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "flatcar-airflow-tests", "-f", str(key_file)])
    authorized_keys = directory / "authorized_keys"
    authorized_keys.write_text(Path(f"{key_file}.pub").read_text())
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)
    log = directory / "sshd.log"
    for _attempt in range(5):
        port = _free_port(address)
        config = directory / "sshd_config"
        config.write_text(
            f"Port {port}\nListenAddress {address}\nHostKey {host_key}\n"
            f"AuthorizedKeysFile {authorized_keys}\n"
            f"PidFile {directory / 'sshd.pid'}\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nPermitRootLogin prohibit-password\n"
            "MaxStartups 100:30:200\nMaxSessions 50\nSubsystem sftp internal-sftp\nLogLevel INFO\n"
        )
        proc = subprocess.Popen(
            ["/usr/sbin/sshd", "-D", "-f", str(config), "-E", str(log)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            _wait_for_port(address, port, proc, "sshd", log)
        except RuntimeError:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            continue
        public = " ".join(Path(f"{host_key}.pub").read_text().split()[:2])
        return BuildHost(address, port, "root", key_file, public, proc)
    raise RuntimeError(f"sshd did not start: {log.read_text(errors='replace')[-2000:]}")


def _start_cache_service(state: Path, address: str) -> BuildCacheServer:
    service = BuildCacheServer(state)
    for _attempt in range(5):
        service.init(Settings(server=address, ssh_port=_free_port(address), https_port=443))
        try:
            service.start()
        except ServerError as err:
            if "in use" not in str(err) and "Address already in use" not in str(err):
                raise
            continue
        return service
    raise RuntimeError(f"the build cache service did not start on {address}")


@pytest.fixture(scope="session")
def build_cache(tmp_path_factory) -> BuildCache:
    """The session's build cache (the project's cache server) and a build host sshd, both on loopback."""
    for tool in ("ssh", "ssh-keygen", "rsync", "openssl", "curl", "zstd"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed (scripts/run-tests.sh installs the Debian packages)")
    base = tmp_path_factory.mktemp("build-cache")
    address = _https_address()
    service = _start_cache_service(base / "service", address)
    try:
        build_host = _start_build_host(base / "build-host", address)
    except BaseException:
        service.stop()
        raise
    settings = service.settings()
    ssh_config = base / "ssh_config"
    ssh_config.write_text(
        f"Host {address}\n    Port {settings.ssh_port}\n    User {settings.user}\n"
        f"    IdentityFile {service.writer_key}\n    IdentitiesOnly yes\n    StrictHostKeyChecking no\n"
        "    UserKnownHostsFile /dev/null\n    LogLevel ERROR\n    BatchMode yes\n"
    )
    shim_dir = base / "ssh-shim"
    shim_dir.mkdir()
    real_ssh = shutil.which("ssh") or "/usr/bin/ssh"
    (shim_dir / "ssh").write_text(f"#!/bin/sh\nexec {real_ssh} -F '{ssh_config}' \"$@\"\n")
    (shim_dir / "ssh").chmod(0o755)
    cache = BuildCache(
        root=service.data,
        server=address,
        ssh_port=settings.ssh_port,
        user=settings.user,
        key_file=service.writer_key,
        host_key=service.host_key(),
        https_url=f"https://{address}",
        ca_file=service.ca_file,
        ssh_config=ssh_config,
        ssh_shim_dir=shim_dir,
        build_host=build_host,
        service=service,
    )
    _SESSION["build_cache"] = cache
    root = cache.root
    try:
        probe = cache.ssh(f"mkdir -p {root}/.probe")
        assert probe.returncode == 0, f"ssh to the build cache failed: {probe.stderr}"
        (root / ".probe" / "hello").write_text("hello\n")
        assert cache.fetch(".probe/hello") == b"hello\n"
        shutil.rmtree(root / ".probe")
        yield cache
    finally:
        _SESSION.pop("build_cache", None)
        cache.stop()


# -- the miniature scripts repository ---------------------------------------------------------------------


@dataclass
class MiniOrigin:
    """A bare git origin of the miniature scripts repository.

    ``main``: version.txt of the full nightly 4798.0.0+nightly-20260820-2100 (tag
    ``main-4798.0.0-nightly-20260820-2100``); ``flatcar-4593``: OS 4593.2.4 on SDK 4593.0.0 (release tag
    ``stable-4593.2.4``), the parent of main's commit.
    """

    path: Path

    @property
    def url(self) -> str:
        return str(self.path)

    def git(self, *args: str) -> str:
        return _git(*args, cwd=self.path)

    def head(self, branch: str) -> str:
        return self.git("rev-parse", f"refs/heads/{branch}")

    def tags(self) -> list[str]:
        return self.git("tag", "--list").split()

    def tag_commit(self, tag: str) -> str:
        return self.git("rev-parse", f"refs/tags/{tag}^{{commit}}")

    def show(self, rev: str, path: str) -> str:
        return self.git("show", f"{rev}:{path}")

    def versionfile(self, rev: str) -> dict[str, str]:
        values = {}
        for line in self.show(rev, VERSIONFILE).splitlines():
            key, _, value = line.partition("=")
            values[key] = value.strip('"')
        return values

    def clone(self, dest: Path, ref: str | None = None) -> Path:
        """A work clone (with origin/* refs), detached at ``ref`` when given."""
        _git("clone", "-q", self.url, str(dest))
        if ref is not None:
            _git("checkout", "-q", "--detach", _resolve_ref(dest, ref), cwd=dest)
        return dest

    def push_change(
        self,
        branch: str,
        path: str,
        content: str,
        message: str | None = None,
        date: dt.datetime | None = None,
    ) -> str:
        """A developer pushes a commit changing one file to a branch (committed at ``date``); returns it."""
        with tempfile.TemporaryDirectory(prefix="mini-origin-change-") as tmp:
            work = self.clone(Path(tmp) / "work", branch)
            (work / path).parent.mkdir(parents=True, exist_ok=True)
            (work / path).write_text(content)
            _git("add", path, cwd=work)
            _git("commit", "-q", "-m", message or f"change {path}", cwd=work, date=date)
            _git("push", "-q", "origin", f"HEAD:refs/heads/{branch}", cwd=work)
            return _git("rev-parse", "HEAD", cwd=work)


def make_mini_origin(dest: Path) -> MiniOrigin:
    """Create the bare origin at ``dest`` from examples/mini-scripts (the demo profile's origin)."""
    return MiniOrigin(make_demo_origin(dest, MINI_SCRIPTS))


@pytest.fixture(scope="session")
def _mini_origin_template(tmp_path_factory) -> MiniOrigin:
    return make_mini_origin(tmp_path_factory.mktemp("mini-origin-template") / "scripts.git")


@pytest.fixture
def mini_origin(_mini_origin_template, tmp_path) -> MiniOrigin:
    """A fresh copy of the miniature scripts origin for one test (see :class:`MiniOrigin`)."""
    dest = tmp_path / "mini-origin.git"
    shutil.copytree(_mini_origin_template.path, dest, symlinks=True)
    return MiniOrigin(dest)


# -- running a step ------------------------------------------------------------------------------------


class StepResult(tuple):
    """``(returncode, output)`` of a step, plus ``workspace``, ``cleanup_script`` and ``cleanup_output``."""

    returncode: int
    output: str
    workspace: Path
    cleanup_script: str
    cleanup_output: str

    def __new__(cls, returncode: int, output: str, workspace: Path, cleanup_script: str, cleanup_output: str):
        self = super().__new__(cls, (returncode, output))
        self.returncode = returncode
        self.output = output
        self.workspace = workspace
        self.cleanup_script = cleanup_script
        self.cleanup_output = cleanup_output
        return self


_STEP_COUNTER = itertools.count(1)
_STEP_ENV_DROP = (
    "MINI_",
    "BUILDCACHE_",
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "SIGNER",
    "SIGNING_KEY",
)


def _resolve_ref(work: Path, ref: str) -> str:
    """A branch name means the origin's branch (origin/<ref>); anything else is used as it is."""
    remote = f"refs/remotes/origin/{ref}"
    found = _run(["git", "rev-parse", "--verify", "--quiet", remote], cwd=work, check=False)
    return remote if found.returncode == 0 else ref


def _run_group(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float) -> tuple[int, str]:
    """Run in a new session with stdin from /dev/null; on timeout kill the whole process group."""
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        text=True,
        errors="replace",
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        output += f"\n[infra] killed after {timeout} s\n"
        return -9, output
    return proc.returncode, output


def run_step(
    origin_url: str,
    ref_or_tag: str,
    script: str,
    function: str,
    *args: str,
    env: dict[str, str] | None = None,
    cwd_root: Path | str | None = None,
    cache: BuildCache | None = None,
    timeout: float = 300,
) -> StepResult:
    """Run one scripts step like CI does, in a fresh clone of ``origin_url`` at ``ref_or_tag``.

    The clone has an ``origin`` remote with current tracking refs; a branch name is checked out detached
    at ``origin/<branch>``. ci-config.env gets the build cache overrides appended (hidden from git with
    --skip-worktree). The step runs as ``source ci-automation/<script>; <function> <args>`` with stdin
    from /dev/null, the cache's env() and ``env``; then ./ci-cleanup.sh runs if the step left one.
    Returns a :class:`StepResult` (unpacks as ``returncode, output``).
    """
    cache = cache or _SESSION.get("build_cache")
    if cache is None:
        raise RuntimeError("run_step needs a build cache: use the build_cache fixture (or pass cache=)")
    root = Path(cwd_root) if cwd_root is not None else Path(tempfile.mkdtemp(prefix="mini-step-"))
    root.mkdir(parents=True, exist_ok=True)
    workspace = root / f"ws-{next(_STEP_COUNTER):03d}-{function}"
    _git("clone", "-q", origin_url, str(workspace))
    _git("checkout", "-q", "--detach", _resolve_ref(workspace, ref_or_tag), cwd=workspace)
    with (workspace / "ci-automation/ci-config.env").open("a") as config:
        config.write("\n# tests: the build cache of this session\n" + cache.config_overrides())
    _git("update-index", "--skip-worktree", "ci-automation/ci-config.env", cwd=workspace)
    home = root / "home"
    home.mkdir(exist_ok=True)

    step_env = {key: value for key, value in os.environ.items() if not key.startswith(_STEP_ENV_DROP)}
    step_env.update(cache.env())
    step_env.update({"HOME": str(home), "GIT_CONFIG_NOSYSTEM": "1", "DOCKER_HOST": DOCKER_HOST})
    step_env.update(env or {})
    script_path = script if script.startswith("ci-automation/") else f"ci-automation/{script}"
    returncode, output = _run_group(
        ["bash", "-c", 'source "$1" || exit 1; shift; "$@"', "mini-step", script_path, function, *args],
        workspace,
        step_env,
        timeout,
    )
    cleanup_script = cleanup_output = ""
    if (workspace / "ci-cleanup.sh").exists():
        cleanup_script = (workspace / "ci-cleanup.sh").read_text()
        _, cleanup_output = _run_group(["bash", "./ci-cleanup.sh"], workspace, step_env, 120)
    return StepResult(returncode, output, workspace, cleanup_script, cleanup_output)


@pytest.fixture
def step_runner(build_cache, tmp_path):
    """``run_step`` bound to the session's build cache, with workspaces under the test's tmp_path."""
    return functools.partial(run_step, cache=build_cache, cwd_root=tmp_path / "steps")
