"""The build cache: an Airflow connection, existence checks over HTTP(S), settings for the scripts.

Flatcar's build cache ("bincache") is written with rsync over ssh and read over HTTPS (seed document,
"Auxiliary infrastructure"). One Airflow connection of type ``flatcar_buildcache`` describes it:

============  ==========================================================================================
host          the cache server; the scripts get it as ``BUILDCACHE_SERVER`` (they read
              ``https://<host>/…`` and write ``<user>@<host>:<path prefix>/…``)
port          ssh port for writes (default 22; other ports reach the scripts' ssh through an ssh config)
login         ssh user (``BUILDCACHE_USER``)
extra         ``path_prefix`` (``BUILDCACHE_PATH_PREFIX``, required), ``private_key`` (PEM text) or
              ``key_file`` (a path on the build host) for ssh, ``http_url`` (base URL for our existence
              checks; default ``https://<host>``), ``ca_bundle`` (CA certificates for HTTPS: PEM text or
              a path on the Airflow worker; the steps get them as ``CURL_CA_BUNDLE``, and our checks trust
              them), ``verify`` (false disables TLS checks of our own reads only), ``host_key`` (the ssh
              server's public key ``<type> <base64>``, checked when flatcar-airflow itself writes a file;
              without it the worker's known_hosts must know the server)

flatcar-airflow's own writes (the build manifest) use ``ssh`` and ``rsync`` on the worker, like the
scripts' ``copy_to_buildcache``; the project's cache server (docs/buildcache.md) allows the key nothing else.
============  ==========================================================================================

The private key is masked in logs and only ever written into a job's private directory on the build host.
"""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property

import httpx
from airflow.sdk import BaseHook

__all__ = ["BuildCacheHook", "BuildCacheSettings", "CacheEntry"]

_SAFE_PATH = re.compile(r"^[A-Za-z0-9._+@=,-][A-Za-z0-9._+@=,/-]*$")


@dataclass(frozen=True)
class BuildCacheSettings:
    server: str
    port: int
    user: str
    path_prefix: str
    http_url: str
    private_key: str | None = None
    key_file: str | None = None
    ca_bundle: str | None = None
    verify: bool = True
    host_key: str | None = None

    def step_environment(self) -> dict[str, str]:
        """Non-secret variables every step gets (the CA reaches it as a job file, see :meth:`ca_pem`)."""
        return {"BUILDCACHE_SERVER": self.server}

    def ca_pem(self) -> bytes | None:
        """The CA certificates for HTTPS reads: PEM text from the connection, or read from a path."""
        if not self.ca_bundle:
            return None
        if self.ca_bundle.lstrip().startswith("-----BEGIN"):
            return self.ca_bundle.encode()
        with open(self.ca_bundle, "rb") as handle:
            return handle.read()

    def job_cache(self) -> dict[str, str]:
        """Settings the step wrapper applies (path prefix and user override ci-config.env)."""
        cache = {"server": self.server, "user": self.user, "path_prefix": self.path_prefix}
        if self.port != 22:
            cache["port"] = str(self.port)
        return cache


@dataclass(frozen=True)
class CacheEntry:
    path: str
    url: str
    exists: bool
    size: int | None = None


class BuildCacheHook(BaseHook):
    """Reads and checks the build cache; hands the scripts what they need to write to it."""

    conn_name_attr = "buildcache_conn_id"
    default_conn_name = "flatcar_buildcache_default"
    conn_type = "flatcar_buildcache"
    hook_name = "Flatcar build cache"

    #: Concurrent HTTP requests for batched checks.
    concurrency = 16

    def __init__(self, buildcache_conn_id: str = default_conn_name, **kwargs) -> None:
        super().__init__(**kwargs)
        self.buildcache_conn_id = buildcache_conn_id

    @classmethod
    def get_ui_field_behaviour(cls) -> dict:
        return {
            "hidden_fields": ["schema", "password"],
            "relabeling": {
                "host": "Cache server (BUILDCACHE_SERVER)",
                "login": "ssh user (BUILDCACHE_USER)",
                "port": "ssh port",
            },
            "placeholders": {
                "extra": '{"path_prefix": "/srv/bincache", "private_key": "-----BEGIN OPENSSH PRIVATE KEY…",'
                ' "http_url": "https://bincache.example.org"}',
            },
        }

    @cached_property
    def settings(self) -> BuildCacheSettings:
        conn = self.get_connection(self.buildcache_conn_id)
        extra = conn.extra_dejson
        problems = []
        if not conn.host:
            problems.append("host (the cache server) is empty")
        if not conn.login:
            problems.append("login (the ssh user) is empty")
        if not extra.get("path_prefix"):
            problems.append("extra 'path_prefix' (BUILDCACHE_PATH_PREFIX) is missing")
        if problems:
            raise ValueError(f"build cache connection {self.buildcache_conn_id!r}: {'; '.join(problems)}")
        private_key = extra.get("private_key")
        if private_key:
            from airflow.sdk.log import mask_secret

            mask_secret(private_key)
        verify = extra.get("verify", True)
        return BuildCacheSettings(
            server=conn.host,
            port=int(conn.port or 22),
            user=conn.login,
            path_prefix=str(extra["path_prefix"]).rstrip("/") or "/",
            http_url=str(extra.get("http_url") or f"https://{conn.host}").rstrip("/"),
            private_key=private_key,
            key_file=extra.get("key_file"),
            ca_bundle=extra.get("ca_bundle"),
            host_key=extra.get("host_key"),
            verify=str(verify).lower() not in ("false", "0", "no"),
        )

    def get_conn(self) -> httpx.Client:
        settings = self.settings
        verify: bool | ssl.SSLContext = False
        if settings.verify:
            verify = True
            pem = settings.ca_pem()
            if pem:
                verify = ssl.create_default_context(cadata=pem.decode())
        return httpx.Client(verify=verify, timeout=httpx.Timeout(30.0), follow_redirects=False)

    def url(self, path: str) -> str:
        return f"{self.settings.http_url}/{path.lstrip('/')}"

    def check(self, paths: Iterable[str]) -> dict[str, CacheEntry]:
        """HEAD every path concurrently (one round trip's worth of latency, not one per file)."""
        unique = list(dict.fromkeys(paths))
        if not unique:
            return {}
        with self.get_conn() as client, ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            entries = pool.map(lambda path: self._head(client, path), unique)
            return {entry.path: entry for entry in entries}

    def _head(self, client: httpx.Client, path: str) -> CacheEntry:
        url = self.url(path)
        response = client.head(url)
        if response.status_code == 404:
            return CacheEntry(path, url, False)
        response.raise_for_status()
        length = response.headers.get("content-length")
        return CacheEntry(path, url, True, int(length) if length and length.isdigit() else None)

    def upload(self, path: str, data: bytes) -> str:
        """Write one file into the cache as the scripts do: ``mkdir -p`` over ssh, then rsync.

        rsync writes a temporary file and renames it, so readers see the old file or the new one, never a
        part. A write key of the project's cache server may do nothing else (docs/buildcache.md). Used
        for flatcar-airflow's own records (the build manifest); needs ``ssh`` and ``rsync`` on the worker.
        """
        import posixpath
        import shlex
        import subprocess
        import tempfile

        settings = self.settings
        if not _SAFE_PATH.match(path) or ".." in path.split("/"):
            raise ValueError(
                f"cache path {path!r} must be relative, without '..', of letters, digits and ._+-/"
            )
        target = f"{settings.path_prefix}/{path}"
        with tempfile.TemporaryDirectory(prefix="flatcar-cache-upload-") as tmp:
            ssh = ["ssh", "-p", str(settings.port), "-o", "BatchMode=yes", "-o", "NumberOfPasswordPrompts=0"]
            ssh += ["-o", "ConnectTimeout=30", "-o", "ServerAliveInterval=30"]
            if settings.host_key:
                known = f"{tmp}/known_hosts"
                host = settings.server if settings.port == 22 else f"[{settings.server}]:{settings.port}"
                _write_private(known, f"{host} {settings.host_key}\n")
                ssh += ["-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes"]
            if settings.private_key:
                key = f"{tmp}/id"
                _write_private(key, settings.private_key.rstrip("\n") + "\n")
                ssh += ["-i", key, "-o", "IdentitiesOnly=yes"]
            elif settings.key_file:
                ssh += ["-i", settings.key_file, "-o", "IdentitiesOnly=yes"]
            local = f"{tmp}/{posixpath.basename(path)}"
            with open(local, "wb") as handle:
                handle.write(data)
            remote = f"{settings.user}@{settings.server}"
            into = f"{remote}:{posixpath.dirname(target)}/"
            for what, cmd in (
                ("mkdir -p", [*ssh, remote, f"mkdir -p {shlex.quote(posixpath.dirname(target))}"]),
                # Into the directory (rrsync refuses to replace a file named as the destination) and
                # regardless of size and time (a same-size rewrite within a second is no change to rsync).
                (
                    "rsync",
                    ["rsync", "--ignore-times", "--chmod=D755,F644", "-e", shlex.join(ssh), local, into],
                ),
            ):
                try:
                    proc = subprocess.run(
                        cmd,
                        capture_output=True,
                        text=True,
                        stdin=subprocess.DEVNULL,
                        timeout=300,
                        check=False,
                    )
                except FileNotFoundError:
                    raise RuntimeError(
                        f"cannot write to the build cache: {cmd[0]} is not installed"
                    ) from None
                if proc.returncode != 0:
                    # ssh and rsync say the cause last ("Host key verification failed.").
                    lines = [line for line in proc.stderr.splitlines() if line.strip()] or ["no message"]
                    raise RuntimeError(
                        f"cannot write {path} to the build cache ({remote}, port {settings.port}): {what} "
                        f"failed ({proc.returncode}): {lines[-1].strip()[:300]}"
                    )
        return self.url(path)

    def read_text(self, path: str) -> str:
        with self.get_conn() as client:
            response = client.get(self.url(path))
            response.raise_for_status()
            return response.text


def _write_private(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
