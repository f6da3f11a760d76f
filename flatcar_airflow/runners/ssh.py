"""SSH runner: the step runs on a build host reached through an Airflow SSH connection (providers-ssh).

The wrapper is started detached on the host (``setsid``, output to a log file in the job directory), so
the step does not depend on the ssh connection: we follow the log over SFTP and, when the connection
drops, reconnect for up to ``reconnect_timeout`` seconds and continue where we were. If the host stays
unreachable the attempt fails; the retry's wrapper first stops the earlier attempt if it still runs, so a
step never runs twice. There is no command timeout (the provider's default 10 s does not apply).
"""

from __future__ import annotations

import contextlib
import shlex
import socket
import stat
import threading
import time
from collections.abc import Callable
from typing import Any

import paramiko

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

__all__ = ["SSHRunner"]

_CONNECTION_ERRORS = (paramiko.SSHException, socket.error, EOFError, OSError)
#: The most of the log read at once (a step printing fast is read in pieces: memory stays flat).
_READ_BYTES = 4 << 20
#: Seconds between checks that the wrapper still runs while its log is quiet.
_ALIVE_CHECK_INTERVAL = 10.0


class SSHRunner(Runner):
    def __init__(
        self,
        ssh_conn_id: str,
        root: str = DEFAULT_ROOT,
        reconnect_timeout: float = 300.0,
        poll_interval: float = 1.0,
        pooled_worktrees: bool = True,
    ) -> None:
        super().__init__()
        self.pooled_worktrees = pooled_worktrees
        self.ssh_conn_id = ssh_conn_id
        self.root = root
        self.reconnect_timeout = float(reconnect_timeout)
        self.poll_interval = float(poll_interval)
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._pid: int | None = None
        self._lock = threading.Lock()
        self._following = False

    def describe(self) -> str:
        return f"ssh ({self.ssh_conn_id}, {self.root})"

    # -- connection ----------------------------------------------------------------------------------
    def _connect(self, attempts: int = 3) -> paramiko.SSHClient:
        from airflow.providers.ssh.hooks.ssh import SSHHook

        hook = SSHHook(
            ssh_conn_id=self.ssh_conn_id, cmd_timeout=None, conn_timeout=30, conn_retry_attempts=attempts
        )
        client = hook.get_conn()
        transport = client.get_transport()
        if transport is not None:
            transport.set_keepalive(15)
        return client

    def _session(self) -> tuple[paramiko.SSHClient, paramiko.SFTPClient]:
        with self._lock:
            if self._client is None or self._sftp is None:
                # While following a step, _follow retries itself within reconnect_timeout: the hook's
                # own connect retries (3-5 s apart) would only stretch that timeout.
                self._client = self._connect(attempts=1 if self._following else 3)
                self._sftp = self._client.open_sftp()
            return self._client, self._sftp

    def _drop(self) -> None:
        with self._lock:
            for closable in (self._sftp, self._client):
                try:
                    if closable is not None:
                        closable.close()
                except Exception:  # noqa: S110 - best effort on a broken connection
                    pass
            self._client = self._sftp = None

    def _exec(self, command: str, timeout: float = 120.0) -> tuple[int, str]:
        client, _ = self._session()
        _, stdout, stderr = client.exec_command(command, timeout=timeout)
        out = stdout.read().decode("utf-8", "replace")
        err = stderr.read().decode("utf-8", "replace")
        return stdout.channel.recv_exit_status(), out + err

    def probe(self, script: str, env, timeout: float = 90.0) -> tuple[int, str]:
        # shlex.join quotes every value, the script included: nothing reaches the remote shell unquoted.
        command = shlex.join(["env", *(f"{name}={value}" for name, value in env.items()), "bash", "-c",
                              script, "flatcar-preflight"])  # fmt: skip
        try:
            return self._exec(command, timeout)
        except (*_CONNECTION_ERRORS, TimeoutError) as err:
            raise RunnerError(
                f"cannot run the checks on the build host: {err or type(err).__name__}"
            ) from None
        finally:
            self._drop()

    # -- the job -------------------------------------------------------------------------------------
    def run(self, job: Job, on_output: Callable[[str], None], on_tick: Callable[[], None]) -> JobOutcome:
        mask_job_secrets(job)
        mirror, workspace, job_dir = host_paths(self.root, job)
        try:
            self._prepare(job, job_dir, mirror, workspace)
            if self.killed:
                raise RunnerError("the task was stopped before the step started")
            self._start(job_dir)
        except _CONNECTION_ERRORS as err:
            self._drop()
            raise RunnerError(f"cannot start the step on the build host: {err}") from None
        self._following = True
        try:
            self._follow(job_dir, on_output, on_tick)
        finally:
            self._following = False
        try:
            return self._collect(job_dir)
        finally:
            self._drop()

    def _prepare(self, job: Job, job_dir: str, mirror: str, workspace: str) -> None:
        subdirs = sorted({name.rsplit("/", 1)[0] for name in job.files if "/" in name})
        d = shlex.quote(job_dir)
        more = " ".join(shlex.quote(f"{job_dir}/{sub}") for sub in subdirs)
        status, output = self._exec(f"mkdir -p {d} && chmod 0700 {d} && rm -rf {d}/* && mkdir -p {d} {more}")
        if status != 0:
            raise RunnerError(
                f"cannot create the job directory {job_dir} on the build host: {output.strip()}"
            )
        _, sftp = self._session()
        self._put(sftp, f"{job_dir}/flatcar-step.sh", wrapper_script().encode(), 0o755)
        self._put(
            sftp,
            f"{job_dir}/job.env",
            render_job_env(
                job,
                mirror=mirror,
                workspace=workspace,
                pool=pool_path(self.root, job) if self.pooled_worktrees else "",
            ).encode(),
            0o600,
        )
        for name, content in job.files.items():
            self._put(sftp, f"{job_dir}/{name}", content, 0o600)

    @staticmethod
    def _put(sftp: paramiko.SFTPClient, path: str, content: bytes, mode: int) -> None:
        with sftp.open(path, "wb") as handle:
            handle.chmod(mode)
            handle.write(content)

    def _start(self, job_dir: str) -> None:
        q = shlex.quote
        command = (
            f"setsid -f bash {q(job_dir + '/flatcar-step.sh')} {q(job_dir)} "
            f">{q(job_dir + '/log')} 2>&1 </dev/null"
        )
        status, output = self._exec(command)
        if status != 0:
            raise RunnerError(f"cannot start the step wrapper on the build host: {output.strip()}")
        _, sftp = self._session()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with sftp.open(f"{job_dir}/pid") as handle:
                    text = handle.read().decode().strip()
                if text.isdigit():
                    self._pid = int(text)
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RunnerError("the step wrapper did not start on the build host within 60 s")

    def _follow(self, job_dir: str, on_output, on_tick) -> None:
        last_alive_check = time.monotonic()
        offset = 0
        lines = OutputLines(on_output)
        lost_since: float | None = None
        while True:
            try:
                _, sftp = self._session()
                done = _exists(sftp, f"{job_dir}/result.json")
                with sftp.open(f"{job_dir}/log", "rb") as handle:
                    handle.seek(offset)
                    chunk = handle.read(_READ_BYTES)
                if lost_since is not None:
                    away = time.monotonic() - lost_since
                    on_output(f"[flatcar-airflow] reconnected to the build host after {away:.0f} s")
                    lost_since = None
            except FileNotFoundError:
                raise RunnerError(
                    "the step's job directory is gone from the build host: a newer attempt of this step "
                    "stopped this one"
                ) from None
            except _CONNECTION_ERRORS as err:
                self._drop()
                now = time.monotonic()
                if lost_since is None:
                    lost_since = now
                    on_output(
                        f"[flatcar-airflow] lost the connection to the build host ({err}); reconnecting"
                    )
                if now - lost_since >= self.reconnect_timeout:
                    raise RunnerError(
                        f"lost the connection to the build host for over {self.reconnect_timeout:.0f} s; "
                        "the step may still run there: the retry stops it before starting again"
                    ) from None
                on_tick()
                time.sleep(min(2.0, max(self.poll_interval, 0.2)))
                continue
            if chunk:
                offset += len(chunk)
                lines.feed(chunk)
                if len(chunk) == _READ_BYTES:
                    continue  # more to read now
            on_tick()
            if done and not chunk:
                break
            if not chunk:
                now = time.monotonic()
                if now - last_alive_check >= (1.0 if self.killed else _ALIVE_CHECK_INTERVAL):
                    # A wrapper killed hard (SIGKILL after the stop grace, the OOM killer) never writes
                    # result.json: without this, we would follow its log for ever.
                    last_alive_check = now
                    if not self._wrapper_alive() and not self._result_written(job_dir):
                        break
                time.sleep(self.poll_interval)
        lines.close()

    def _result_written(self, job_dir: str) -> bool:
        """Whether result.json is there now (a connection error counts as yes: the main loop reconnects)."""
        try:
            return _exists(self._session()[1], f"{job_dir}/result.json")
        except _CONNECTION_ERRORS:
            return True

    def _wrapper_alive(self) -> bool:
        """Whether our wrapper still runs on the host (its pid, running flatcar-step.sh); unknown = alive."""
        if self._pid is None:
            return True
        try:
            status, _ = self._exec(f"grep -qs flatcar-step.sh /proc/{int(self._pid)}/cmdline", timeout=30)
        except _CONNECTION_ERRORS:
            return True
        return status == 0

    def _collect(self, job_dir: str) -> JobOutcome:
        _, sftp = self._session()

        def read(name: str) -> str | None:
            try:
                with sftp.open(f"{job_dir}/{name}", "rb") as handle:
                    return handle.read().decode("utf-8", "replace")
            except OSError:
                return None

        result = read("result.json")
        if result is None:
            # Killed hard: its cleanup did not run. Run it now (the next attempt would otherwise).
            q = shlex.quote
            with contextlib.suppress(*_CONNECTION_ERRORS):
                self._exec(
                    f"bash {q(job_dir + '/flatcar-step.sh')} --cleanup {q(job_dir)} "
                    f">/dev/null 2>&1 </dev/null; rm -rf {q(job_dir)}",
                    timeout=self.stop_grace + 30,
                )
            raise RunnerError("the step wrapper ended without a result (killed hard); its cleanup ran")
        tap: dict[str, Any] = {}
        try:
            for entry in sftp.listdir_attr(f"{job_dir}/tap"):
                if entry.filename.endswith(".tap") and stat.S_ISREG(entry.st_mode or 0):
                    tap[entry.filename] = read(f"tap/{entry.filename}") or ""
        except OSError:
            pass
        outcome = JobOutcome.from_files(result, read("images.list"), tap)
        self._exec(f"rm -rf {shlex.quote(job_dir)}")
        return outcome

    def kill(self) -> None:
        self._killed.set()
        pid = self._pid
        if pid is None:
            return
        command = (
            f"kill -TERM -- -{pid}; for i in $(seq {int(self.stop_grace) * 5}); do "
            f"kill -0 -- -{pid} 2>/dev/null || exit 0; sleep 0.2; done; "
            f"kill -KILL -- -{pid} 2>/dev/null; exit 0"
        )

        def stop() -> None:
            try:
                client = self._connect()
                try:
                    client.exec_command(command, timeout=self.stop_grace + 60)[1].channel.recv_exit_status()
                finally:
                    client.close()
            except _CONNECTION_ERRORS:
                pass

        threading.Thread(target=stop, daemon=True).start()


def _exists(sftp: paramiko.SFTPClient, path: str) -> bool:
    try:
        sftp.stat(path)
    except OSError:
        return False
    return True
