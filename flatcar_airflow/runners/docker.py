"""Docker runner: the step runs in a runner container on a Docker host (docker SDK, as providers-docker).

The runner image (``docker/runner/Dockerfile``) has what the scripts need. The host's docker socket is
mounted so the scripts can start the SDK containers, and ``root`` (mirrors and work trees) is mounted at
the same path as on the host, because the scripts bind-mount their work tree into the containers they
start and the Docker host resolves those paths. The job directory (wrapper, job.env, keys) is copied into
the container before it starts and never touches the host's disk.

Stopping: ``docker stop`` sends SIGTERM to the wrapper (PID 1), which stops the step's processes and runs
``ci-cleanup.sh`` (removing the step's SDK containers). A runner container that had to be killed hard
gets its work tree's cleanup from a fresh container. An earlier attempt's container of the same job that
still runs is stopped before a new one starts.
"""

from __future__ import annotations

import contextlib
import io
import queue
import re
import tarfile
import threading
import time
from collections.abc import Callable

from docker.errors import APIError, DockerException, NotFound

import docker

from .base import (
    Job,
    JobOutcome,
    OutputLines,
    Runner,
    RunnerError,
    mask_job_secrets,
    render_job_env,
    wrapper_script,
)
from .local import DEFAULT_ROOT, host_paths, pool_path

__all__ = ["DockerRunner"]

_LABEL = "io.flatcar-airflow.job"
_JOB_ROOT = "/flatcar-job"


class DockerRunner(Runner):
    def __init__(
        self,
        image: str,
        root: str = DEFAULT_ROOT,
        docker_url: str | None = None,
        network_mode: str = "host",
        docker_conn_id: str | None = None,
        pooled_worktrees: bool = True,
    ) -> None:
        super().__init__()
        self.pooled_worktrees = pooled_worktrees
        self.image = image
        self.root = root
        self.docker_url = docker_url
        self.network_mode = network_mode
        self.docker_conn_id = docker_conn_id
        self._container = None

    def describe(self) -> str:
        return f"docker ({self.image} on {self.docker_url or 'the local Docker host'}, {self.root})"

    def _client(self) -> docker.DockerClient:
        try:
            if self.docker_url:
                client = docker.DockerClient(base_url=self.docker_url, timeout=120)
            else:
                client = docker.from_env(timeout=120)
            if self.docker_conn_id:
                from airflow.providers.docker.hooks.docker import DockerHook

                DockerHook(docker_conn_id=self.docker_conn_id, base_url=client.api.base_url).get_conn()
            return client
        except DockerException as err:
            raise RunnerError(f"cannot reach the Docker host: {err}") from None

    def probe(self, script: str, env, timeout: float = 90.0) -> tuple[int, str]:
        """The checks in a runner container set up as a step's is (docker socket and ``root`` mounted)."""
        from docker.errors import ContainerError, ImageNotFound

        client = self._client()
        try:
            output = client.containers.run(
                self.image,
                command=["bash", "-c", script, "flatcar-preflight"],
                environment=dict(env),
                volumes={
                    "/var/run/docker.sock": {"bind": "/var/run/docker.sock", "mode": "rw"},
                    self.root: {"bind": self.root, "mode": "rw"},
                },
                network_mode=self.network_mode,
                labels={_LABEL: "preflight"},
                remove=True,
                stdout=True,
                stderr=True,
            )
        except ImageNotFound as err:
            raise RunnerError(f"runner image {self.image!r} not found on the Docker host: {err}") from None
        except ContainerError as err:
            return err.exit_status, (err.stderr or b"").decode("utf-8", "replace")
        except APIError as err:
            raise RunnerError(f"cannot start a runner container: {err}") from None
        return 0, output.decode("utf-8", "replace")

    def run(self, job: Job, on_output: Callable[[str], None], on_tick: Callable[[], None]) -> JobOutcome:
        mask_job_secrets(job)
        client = self._client()
        mirror, workspace, _ = host_paths(self.root, job)
        job_dir = f"{_JOB_ROOT}/{job.attempt}"
        self._stop_earlier_attempts(client, job, workspace, on_output)
        name = f"flatcar-airflow-{job.key}"[:200] + f"-{job.attempt}"
        try:
            container = client.containers.create(
                self.image,
                command=["bash", f"{job_dir}/flatcar-step.sh", job_dir],
                name=name,
                labels={_LABEL: job.key, f"{_LABEL}.attempt": str(job.attempt)},
                volumes={
                    "/var/run/docker.sock": {"bind": "/var/run/docker.sock", "mode": "rw"},
                    self.root: {"bind": self.root, "mode": "rw"},
                },
                network_mode=self.network_mode,
                stdin_open=False,
                tty=False,
                working_dir="/",
            )
        except NotFound as err:
            raise RunnerError(f"runner image {self.image!r} not found on the Docker host: {err}") from None
        except APIError as err:
            raise RunnerError(f"cannot create the runner container: {err}") from None
        self._container = container
        try:
            pool = pool_path(self.root, job) if self.pooled_worktrees else ""
            container.put_archive("/", _job_archive(job, job_dir, mirror, workspace, pool))
            if self.killed:
                raise RunnerError("the task was stopped before the step started")
            container.start()
            self._follow(container, on_output, on_tick)
            status = container.wait(timeout=None)
            outcome, files = self._collect(container, job_dir)
            if outcome is None:
                on_output(
                    "[flatcar-airflow] the runner container ended without a result: running the cleanup"
                )
                self._fallback_cleanup(client, workspace, job.keep_workspace, files)
                raise RunnerError(
                    f"the runner container ended without a result (exit {status.get('StatusCode')})"
                )
            return outcome
        finally:
            with contextlib.suppress(DockerException):
                _remove(container)

    def _follow(self, container, on_output, on_tick) -> None:
        # Bounded: a step printing faster than the task logs waits (memory stays flat).
        blocks: queue.Queue[str | None] = queue.Queue(maxsize=64)

        def pump() -> None:
            lines = OutputLines(blocks.put)
            try:
                for chunk in container.logs(stream=True, follow=True, stdout=True, stderr=True):
                    lines.feed(chunk)
            finally:
                lines.close()
                blocks.put(None)

        threading.Thread(target=pump, daemon=True).start()
        while True:
            try:
                block = blocks.get(timeout=1.0)
            except queue.Empty:
                on_tick()
                continue
            if block is None:
                break
            on_output(block)
            if blocks.empty():
                on_tick()

    def _collect(self, container, job_dir: str) -> tuple[JobOutcome | None, dict[str, str]]:
        """The outcome (None: no result, killed hard) and the job directory's files."""
        files = _read_dir(container, job_dir)
        if "result.json" not in files:
            return None, files
        tap = {name.removeprefix("tap/"): text for name, text in files.items() if name.startswith("tap/")}
        return JobOutcome.from_files(files["result.json"], files.get("images.list"), tap), files

    def _stop_earlier_attempts(self, client, job: Job, workspace: str, on_output) -> None:
        """Never run one job twice: stop (and clean up after) an earlier attempt's container."""
        for container in client.containers.list(all=True, filters={"label": f"{_LABEL}={job.key}"}):
            attempt = container.labels.get(f"{_LABEL}.attempt", "?")
            if container.status in ("running", "restarting", "paused"):
                on_output(
                    f"[flatcar-airflow] stopping earlier attempt {attempt} of this step ({container.name})"
                )
                container.stop(timeout=int(self.stop_grace))
            outcome, files = self._collect(container, f"{_JOB_ROOT}/{attempt}")
            if outcome is None:
                self._fallback_cleanup(client, workspace, False, files)
            _remove(container)

    def _fallback_cleanup(self, client, workspace: str, keep: bool, files: dict[str, str]) -> None:
        """Run the work tree's ci-cleanup.sh from a fresh runner container (the wrapper could not).

        ``files``: the dead container's job directory, which names the work tree it used (``workspace``)
        and, for a pooled tree, its claim on it (``owner``): the wrapper's ``--cleanup-tree`` then runs
        the cleanup only if the tree is still that attempt's, under the tree's lock, and keeps the tree.
        """
        recorded = files.get("workspace", "").strip()
        token = files.get("owner", "").strip()
        # Only a slot of this runner's pool (the file lived where the step could write).
        pooled = re.fullmatch(rf"{re.escape(self.root)}/pool/[0-9a-f]{{16}}/[0-9]+", recorded)
        if token and pooled:
            workspace = recorded
            command = ["bash", "-c", wrapper_script(), "flatcar-step.sh", "--cleanup-tree", workspace, token]
        else:
            script = (
                'cd "$1" 2>/dev/null || exit 0; [ -f ci-cleanup.sh ] && bash ./ci-cleanup.sh; '
                'cd /; [ "$2" = 1 ] || rm -rf "$1"'
            )
            command = ["bash", "-c", script, "cleanup", workspace, "1" if keep else "0"]
        with contextlib.suppress(DockerException):
            client.containers.run(
                self.image,
                command=command,
                volumes={
                    "/var/run/docker.sock": {"bind": "/var/run/docker.sock", "mode": "rw"},
                    self.root: {"bind": self.root, "mode": "rw"},
                },
                network_mode=self.network_mode,
                remove=True,
            )

    def kill(self) -> None:
        self._killed.set()
        container = self._container
        if container is None:
            return

        def stop() -> None:
            with contextlib.suppress(DockerException):
                container.stop(timeout=int(self.stop_grace))

        threading.Thread(target=stop, daemon=True).start()


def _remove(container) -> None:
    """Remove a runner container; one already gone, or being removed by its own runner, is fine."""
    try:
        container.remove(force=True)
    except NotFound:
        pass
    except APIError as err:
        if err.status_code != 409:
            raise


def _job_archive(job: Job, job_dir: str, mirror: str, workspace: str, pool: str = "") -> bytes:
    """A tar of the job directory, private files 0600, for ``put_archive`` into the container."""
    buffer = io.BytesIO()
    now = time.time()
    entries = {
        "flatcar-step.sh": (wrapper_script().encode(), 0o755),
        "job.env": (render_job_env(job, mirror=mirror, workspace=workspace, pool=pool).encode(), 0o600),
        **{name: (content, 0o600) for name, content in job.files.items()},
    }
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        directories = {job_dir.lstrip("/")}
        for name in entries:
            parts = name.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                directories.add(f"{job_dir.lstrip('/')}/{'/'.join(parts[:i])}")
        for directory in sorted({_JOB_ROOT.lstrip("/"), *directories}):
            info = tarfile.TarInfo(directory)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o700, now
            archive.addfile(info)
        for name, (content, mode) in entries.items():
            info = tarfile.TarInfo(f"{job_dir.lstrip('/')}/{name}")
            info.size, info.mode, info.mtime = len(content), mode, now
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def _read_dir(container, path: str) -> dict[str, str]:
    """Regular files under ``path`` in a (possibly stopped) container, by relative name."""
    try:
        stream, _ = container.get_archive(path)
    except NotFound:
        return {}
    data = b"".join(stream)
    files: dict[str, str] = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        base = path.rstrip("/").rsplit("/", 1)[-1]
        for member in archive.getmembers():
            if member.isfile():
                handle = archive.extractfile(member)
                if handle is not None:
                    files[member.name.removeprefix(base + "/")] = handle.read().decode("utf-8", "replace")
    return files
