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
              checks; default ``https://<host>``; no credentials), ``ca_bundle`` (CA certificates for
              HTTPS: PEM text, or a path under /etc/ssl/certs and the like; certificates only; the
              steps get them as ``CURL_CA_BUNDLE``, and our checks trust them), ``verify`` (false
              disables TLS checks of our own reads only), ``host_key`` (the ssh server's public key
              ``<type> <base64>``, checked when flatcar-airflow itself writes a file; without it the
              worker's known_hosts must know the server), ``retries`` and ``retry_wait`` (how often and
              how patiently our own checks, reads and writes try again while the cache is unreachable:
              default 4 more attempts, waiting 2 s, then twice as long each time, at most 30 s)

flatcar-airflow's own writes (the build manifest) use ``ssh`` and ``rsync`` on the worker, like the
scripts' ``copy_to_buildcache``; the project's cache server (docs/buildcache.md) allows the key nothing else.
============  ==========================================================================================

Every field that reaches ssh, git, curl or a file (the job's ssh config, ``job.env``, ``ci-config.env``) is
checked here, when the settings are read, before any of it is used: a host name or IP address, a POSIX
user name, a port number, absolute paths of plain characters, an http(s) URL without credentials, query
or fragment, an ssh public key, and CA certificates (PEM ``CERTIFICATE`` blocks only: as text, or the
path of such a file under :data:`CA_DIRECTORIES`, since the bundle is shipped to the build host and a
path could otherwise name any file of the worker). A bad value fails naming the field and never echoes a
secret.

A cache that restarts or drops off the network for a while is waited for: a connection error, a timeout
or an HTTP 5xx answer (and ssh's or rsync's connection failures) is retried with a doubling wait, a
bounded number of times; then the error names the cache, the attempts and the last cause
(:class:`BuildCacheUnreachable`). A refusal (404, 403, a rejected key) and a full disk are not retried:
they do not get better by waiting. Writes never leave a part of a file under its name: rsync writes a
temporary file and renames it when it is complete (no ``--partial``), so a cut or a full disk leaves the
old file or none.

The private key is masked in logs (the whole key, and each of its lines, which a tool may print alone)
and only ever written into a job's private directory on the build host.
"""

from __future__ import annotations

import os
import re
import ssl
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property

import httpx
from airflow.sdk import BaseHook

__all__ = [
    "CA_DIRECTORIES",
    "BuildCacheHook",
    "BuildCacheSettings",
    "BuildCacheUnreachable",
    "CacheEntry",
    "check_ca_pem",
]

_SAFE_PATH = re.compile(r"[A-Za-z0-9._+@=,-][A-Za-z0-9._+@=,/-]*")
#: A DNS name or IPv4 address (labels of letters, digits and '-'), or an IPv6 address.
_HOST = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
_IPV6 = re.compile(r"[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*")
#: A POSIX portable user name.
_LOGIN = re.compile(r"[A-Za-z_][A-Za-z0-9._-]{0,31}")
#: An absolute path of plain characters (it goes into ci-config.env, ssh and rsync command lines).
_ABS_PATH = re.compile(r"/(?:[A-Za-z0-9._+@=,-]+/?)*")
_HOST_KEY = re.compile(r"(?:ssh|ecdsa|sk)-[A-Za-z0-9@.-]{1,60} [A-Za-z0-9+/]{16,16384}={0,3}")
_PEM_CERT = re.compile(
    r"-----BEGIN CERTIFICATE-----\r?\n(?:[A-Za-z0-9+/=]{1,76}\r?\n)+-----END CERTIFICATE-----"
)
#: Where a ``ca_bundle`` given as a path may be (after resolving symlinks): the system's CA directories.
CA_DIRECTORIES = (
    "/etc/ssl/certs",
    "/usr/local/share/ca-certificates",
    "/usr/share/ca-certificates",
    "/etc/pki",
)
#: Key lines shorter than this are not masked on their own (the last line of a key may be a few bytes).
_MASK_MIN = 16
#: Retries of a check, read or write while the cache is unreachable, and the first wait (it doubles).
DEFAULT_RETRIES = 4
DEFAULT_RETRY_WAIT = 2.0
_MAX_RETRY_WAIT = 30.0
#: rsync's exit statuses of a broken connection (10 socket I/O, 12 protocol stream, 30 timeout,
#: 35 daemon timeout, 255 ssh): worth another attempt, unlike 11 and 23 (file I/O, partial transfer).
_RSYNC_TRANSIENT = frozenset({10, 12, 30, 35, 255})
#: What ssh and the cache's restricted shell print when they refuse (a key, a host key, a command).
_REFUSALS = ("Permission denied", "Host key verification failed", "build cache: refused")
_DISK_FULL = re.compile(r"No space left on device|Disk quota exceeded", re.IGNORECASE)


class BuildCacheUnreachable(RuntimeError):
    """The build cache did not answer (connection refused, timed out, 5xx) within the retries."""


class _Transient(Exception):
    """One attempt failed for a reason that waiting may cure (the message says which)."""


def check_ca_pem(data: bytes, what: str) -> bytes:
    """``data`` if it is nothing but PEM certificates (whitespace between them), else ``ValueError``.

    The bundle is shipped to the build host: this keeps any other file's content (a key, a password
    file) from travelling there under the name of a CA bundle.
    """
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise ValueError(f"{what} is not PEM text (it is not ASCII)") from None
    rest = _PEM_CERT.sub("", text)
    if not _PEM_CERT.search(text) or rest.strip():
        raise ValueError(
            f"{what} must contain PEM certificates (-----BEGIN CERTIFICATE-----) and nothing else"
        )
    return data


def _check_host(value: object) -> str | None:
    if not isinstance(value, str) or not value:
        return "host (the cache server) is empty"
    if len(value) > 253 or not (_HOST.fullmatch(value) or _IPV6.fullmatch(value)):
        return f"host {value[:80]!r} is not a host name or IP address"
    return None


def _check_path(name: str, value: object) -> str | None:
    if (
        not isinstance(value, str)
        or not _ABS_PATH.fullmatch(value)
        or ".." in value.split("/")
        or len(value) > 1024
    ):
        shown = repr(value[:80]) if isinstance(value, str) else type(value).__name__
        return f"extra {name!r} {shown} must be an absolute path of letters, digits and ._+@=,-/ without '..'"
    return None


def _check_http_url(value: object) -> str | None:
    from urllib.parse import urlsplit

    if not isinstance(value, str) or any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in value):
        return "extra 'http_url' must be an http(s) URL without whitespace"
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        return "extra 'http_url' is not a valid URL"
    if "@" in parts.netloc:
        # Credentials would land in XCom, the manifest and the builds index with every artifact URL.
        return "extra 'http_url' must not contain credentials (user:password@): the cache is read anonymously"
    if parts.scheme not in ("http", "https") or not parts.hostname or _check_host(parts.hostname):
        return "extra 'http_url' must be http(s)://HOST[:PORT][/PATH]"
    if parts.query or parts.fragment or (port is not None and not 0 < port < 65536):
        return "extra 'http_url' must be http(s)://HOST[:PORT][/PATH] (no query or fragment)"
    if not _ABS_PATH.fullmatch(parts.path or "/") or ".." in parts.path.split("/"):
        return "extra 'http_url' has a path of other characters than letters, digits and ._+@=,-/"
    return None


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
    retries: int = DEFAULT_RETRIES
    retry_wait: float = DEFAULT_RETRY_WAIT

    def step_environment(self) -> dict[str, str]:
        """Non-secret variables every step gets (the CA reaches it as a job file, see :meth:`ca_pem`)."""
        return {"BUILDCACHE_SERVER": self.server}

    def ca_pem(self) -> bytes | None:
        """The CA certificates for HTTPS reads: PEM text from the connection, or read from an allowed path.

        Checked again here (a file may have changed since the settings were read): only certificates
        under :data:`CA_DIRECTORIES` are ever shipped to a build host.
        """
        if not self.ca_bundle:
            return None
        if self.ca_bundle.lstrip().startswith("-----BEGIN"):
            return check_ca_pem(self.ca_bundle.encode(), "extra 'ca_bundle'")
        return check_ca_pem(_read_ca_file(self.ca_bundle), f"extra 'ca_bundle' file {self.ca_bundle}")

    def job_access(self) -> tuple[dict[str, bytes], dict[str, str]]:
        """What a job that reaches the cache gets: its private files (the CA as ``ssl/ca.pem``, the write
        key as ``ssh/id``) and the wrapper's cache settings (:meth:`job_cache`, with ``key_file`` when the
        key is a path on the build host)."""
        files: dict[str, bytes] = {}
        pem = self.ca_pem()
        if pem:
            files["ssl/ca.pem"] = pem
        cache = self.job_cache()
        if self.private_key:
            files["ssh/id"] = self.private_key.encode() + (b"" if self.private_key.endswith("\n") else b"\n")
        elif self.key_file:
            cache["key_file"] = self.key_file
        return files, cache

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

    #: Keep-alive connections for batched checks, each asking for its share of the paths in turn. On
    #: loopback or a LAN a check costs CPU, not waiting: more threads than cores contend (docs/benchmarks.md);
    #: 8 connections still overlap a WAN's round trips.
    concurrency = 8

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
        """The connection, checked field by field (see the module docstring); problems are all named."""
        conn = self.get_connection(self.buildcache_conn_id)
        extra = conn.extra_dejson
        problems = []
        host_problem = _check_host(conn.host)
        if host_problem:
            problems.append(host_problem)
        if not conn.login:
            problems.append("login (the ssh user) is empty")
        elif not _LOGIN.fullmatch(str(conn.login)):
            problems.append(f"login {str(conn.login)[:40]!r} is not a user name (letters, digits, ._-)")
        try:
            port = int(conn.port or 22)
        except (TypeError, ValueError):
            port = 0
        if not 0 < port < 65536:
            problems.append(f"port {conn.port!r} is not a port number")
        if not extra.get("path_prefix"):
            problems.append("extra 'path_prefix' (BUILDCACHE_PATH_PREFIX) is missing")
        else:
            problems.append(_check_path("path_prefix", extra["path_prefix"]))
        if extra.get("key_file"):
            problems.append(_check_path("key_file", extra["key_file"]))
        if extra.get("http_url"):
            problems.append(_check_http_url(extra["http_url"]))
        host_key = extra.get("host_key")
        if host_key and (not isinstance(host_key, str) or not _HOST_KEY.fullmatch(host_key)):
            problems.append("extra 'host_key' must be '<type> <base64>' (ssh-ed25519 AAAA…) on one line")
        private_key = extra.get("private_key")
        if private_key:
            from airflow.sdk.log import mask_secret

            if not isinstance(private_key, str):
                problems.append("extra 'private_key' must be PEM text")
            else:
                # Airflow masks the whole value of an extra named like a secret; a tool that prints one
                # line of the key file (an ssh-add or rsync error) would still show that line.
                mask_secret(private_key)
                for line in private_key.splitlines():
                    if len(line.strip()) >= _MASK_MIN and not line.startswith("-----"):
                        mask_secret(line.strip())
                if (
                    not private_key.lstrip().startswith("-----BEGIN ")
                    or "PRIVATE KEY-----" not in private_key
                ):
                    problems.append(
                        "extra 'private_key' is not a PEM private key (-----BEGIN … PRIVATE KEY-----)"
                    )
        ca_bundle = extra.get("ca_bundle")
        if ca_bundle:
            problems.append(_check_ca_bundle(ca_bundle))
        raw_retries = extra.get("retries", DEFAULT_RETRIES)
        raw_wait = extra.get("retry_wait", DEFAULT_RETRY_WAIT)
        retries, retry_wait = _bounded(raw_retries, int, 20), _bounded(raw_wait, float, 300)
        if retries is None:
            problems.append(f"extra 'retries' {str(raw_retries)[:20]!r} must be a whole number from 0 to 20")
        if retry_wait is None:
            problems.append(f"extra 'retry_wait' {str(raw_wait)[:20]!r} must be seconds from 0 to 300")
        problems = [problem for problem in problems if problem]
        if problems:
            raise ValueError(f"build cache connection {self.buildcache_conn_id!r}: {'; '.join(problems)}")
        verify = extra.get("verify", True)
        return BuildCacheSettings(
            server=conn.host,
            port=port,
            user=conn.login,
            path_prefix=str(extra["path_prefix"]).rstrip("/") or "/",
            http_url=str(extra.get("http_url") or f"https://{conn.host}").rstrip("/"),
            private_key=private_key,
            key_file=extra.get("key_file"),
            ca_bundle=ca_bundle,
            host_key=host_key,
            verify=str(verify).lower() not in ("false", "0", "no"),
            retries=int(retries or 0),
            retry_wait=float(retry_wait or 0),
        )

    def retrying(self, what: str, where: str, attempt: Callable[[], object]):
        """``attempt()``, tried again after a :class:`_Transient` failure (or an httpx transport error, or
        an HTTP 5xx) up to ``retries`` times with a doubling wait; then :class:`BuildCacheUnreachable`."""
        settings = self.settings
        wait, started = settings.retry_wait, time.monotonic()
        tries = settings.retries + 1
        for number in range(1, tries + 1):
            try:
                return attempt()
            except (_Transient, httpx.TransportError, httpx.HTTPStatusError) as err:
                if isinstance(err, httpx.HTTPStatusError) and err.response.status_code < 500:
                    raise
                if _untrusted_certificate(err):
                    raise  # no outage: waiting does not make the certificate trusted
                cause = _describe(err)
            if number == tries:
                break
            self.log.warning(
                "Build cache %s (%s): %s failed: %s; attempt %d of %d in %.0f s",
                self.buildcache_conn_id,
                where,
                what,
                cause,
                number + 1,
                tries,
                wait,
            )
            time.sleep(wait)
            wait = min(wait * 2, _MAX_RETRY_WAIT)
        raise BuildCacheUnreachable(
            f"the build cache {self.buildcache_conn_id!r} ({where}) is unreachable: {what} failed "
            f"{tries} time(s) over {time.monotonic() - started:.0f} s; last: {cause} "
            "(the connection's extras 'retries' and 'retry_wait' set the patience)"
        )

    def _ssl_context(self) -> ssl.SSLContext:
        """What our reads trust: the connection's CA certificates, else httpx's default (certifi)."""
        settings = self.settings
        if not settings.verify:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            return context
        pem = settings.ca_pem()
        if pem:
            return ssl.create_default_context(cadata=pem.decode())
        import certifi

        return ssl.create_default_context(cafile=os.environ.get("SSL_CERT_FILE") or certifi.where())

    def get_conn(self) -> httpx.Client:
        return httpx.Client(verify=self._ssl_context(), timeout=httpx.Timeout(30.0), follow_redirects=False)

    def url(self, path: str) -> str:
        return f"{self.settings.http_url}/{path.lstrip('/')}"

    def check(self, paths: Iterable[str]) -> dict[str, CacheEntry]:
        """HEAD every path: ``concurrency`` keep-alive connections, each asking for its share in turn.

        On the standard library's HTTP client: a check is a few hundred of these, and httpx's own work per
        request cost more than the request (0.32 s against 0.19 s for 200 on 2 cores, docs/benchmarks.md).
        Through a proxy (``*_proxy`` in the environment), httpx, which honours it, does the checks.
        """
        unique = list(dict.fromkeys(paths))
        if not unique:
            return {}

        def attempt() -> dict[str, CacheEntry]:
            if _proxy_configured():
                with self.get_conn() as client, ThreadPoolExecutor(max_workers=self.concurrency) as pool:
                    entries = pool.map(lambda path: self._head(client, path), unique)
                    return {entry.path: entry for entry in entries}
            workers = min(self.concurrency, len(unique))
            shares = [unique[n::workers] for n in range(workers)]
            context = self._ssl_context() if self.settings.http_url.startswith("https:") else None
            with ThreadPoolExecutor(max_workers=workers) as pool:
                found = {
                    entry.path: entry
                    for share in pool.map(lambda share: self._head_share(share, context), shares)
                    for entry in share
                }
            return {path: found[path] for path in unique}

        what = f"checking {unique[0]}" + (f" and {len(unique) - 1} more" if len(unique) > 1 else "")
        return self.retrying(what, self.settings.http_url, attempt)

    def _head_share(self, paths: list[str], context: ssl.SSLContext | None) -> list[CacheEntry]:
        """HEAD each of ``paths`` over one keep-alive connection (opened again if the server closed it)."""
        import http.client
        from urllib.parse import quote, urlsplit

        base = urlsplit(self.settings.http_url)
        port = base.port or (443 if context is not None else 80)

        def connect() -> http.client.HTTPConnection:
            if context is not None:
                return http.client.HTTPSConnection(base.hostname, port, timeout=30, context=context)
            return http.client.HTTPConnection(base.hostname, port, timeout=30)

        conn = connect()
        entries = []
        try:
            for path in paths:
                url = self.url(path)
                target = quote(urlsplit(url).path, safe="/:@!$&'()*+,;=-._~%")
                for attempt in (1, 2):
                    try:
                        conn.request("HEAD", target, headers={"Host": base.netloc, "Accept": "*/*"})
                        response = conn.getresponse()
                        response.read()
                        break
                    except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                        # A keep-alive connection the server closed between requests: once more, anew.
                        conn.close()
                        conn = connect()
                        if attempt == 2:
                            raise
                if response.status == 404:
                    entries.append(CacheEntry(path, url, False))
                elif 200 <= response.status < 300:
                    length = response.getheader("content-length")
                    size = int(length) if length and length.isdigit() else None
                    entries.append(CacheEntry(path, url, True, size))
                elif response.status >= 500:  # the server's trouble: worth another attempt
                    raise _Transient(f"HTTP {response.status} {response.reason} from {url}")
                else:
                    raise RuntimeError(
                        f"build cache check of {url} failed: HTTP {response.status} {response.reason}"
                    )
        except ssl.SSLCertVerificationError as err:  # no outage: waiting does not make it trusted
            raise RuntimeError(f"build cache check at {self.settings.http_url} failed: {err}") from err
        except OSError as err:  # refused, reset, timed out, no route: waiting may cure it
            raise _Transient(f"{type(err).__name__}: {err}") from err
        finally:
            conn.close()
        return entries

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
        import tempfile

        settings = self.settings
        if not _SAFE_PATH.fullmatch(path) or ".." in path.split("/"):
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
            where = f"{remote}, port {settings.port}"
            for what, cmd in (
                ("mkdir -p", [*ssh, remote, f"mkdir -p {shlex.quote(posixpath.dirname(target))}"]),
                # Into the directory (rrsync refuses to replace a file named as the destination) and
                # regardless of size and time (a same-size rewrite within a second is no change to rsync).
                (
                    "rsync",
                    ["rsync", "--ignore-times", "--chmod=D755,F644", "-e", shlex.join(ssh), local, into],
                ),
            ):
                self.retrying(
                    f"{what} for {path}", where, lambda cmd=cmd, what=what: _write(cmd, what, path, where)
                )
        return self.url(path)

    def read_text(self, path: str) -> str:
        def attempt() -> str:
            with self.get_conn() as client:
                response = client.get(self.url(path))
                response.raise_for_status()
                return response.text

        return self.retrying(f"reading {path}", self.settings.http_url, attempt)


def _write(cmd: list[str], what: str, path: str, where: str) -> None:
    """One run of ssh or rsync for :meth:`BuildCacheHook.upload`: a broken connection is :class:`_Transient`,
    a full disk or any other refusal a ``RuntimeError`` naming the cause."""
    import subprocess

    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300, check=False
        )
    except FileNotFoundError:
        raise RuntimeError(f"cannot write to the build cache: {cmd[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise _Transient(f"{what} timed out after 300 s") from None
    if proc.returncode == 0:
        return
    # ssh and rsync say the cause last ("Host key verification failed."); a full disk may come earlier.
    lines = [line.strip() for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    full = next((line for line in lines if _DISK_FULL.search(line)), None)
    if full or (what == "rsync" and proc.returncode == 11 and not lines):
        # rsync's 11 is "error in file I/O"; the receiver's own message is lost when it dies first.
        cause = full[:300] if full else "rsync's receiver failed to write (exit status 11, no message)"
        raise RuntimeError(
            f"cannot write {path} to the build cache ({where}): disk full on the build cache: "
            f"{cause} (nothing was written under its name)"
        )
    lines = lines or ["no message"]
    message = f"{what} failed ({proc.returncode}): {lines[-1][:300]}"
    if proc.returncode in _RSYNC_TRANSIENT and not _refused(lines):
        raise _Transient(message)
    raise RuntimeError(f"cannot write {path} to the build cache ({where}): {message}")


def _refused(lines: list[str]) -> bool:
    """Whether ssh's messages say the server refused us (no use trying again) rather than went away."""
    text = "\n".join(lines)
    return any(sign in text for sign in _REFUSALS)


def _bounded(value: object, kind: type, most: float) -> float | None:
    """``value`` as ``kind`` if it is a number from 0 to ``most`` (a whole one for ``int``), else None."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    if kind is int and not number.is_integer():
        return None
    return kind(number) if 0 <= number <= most else None


def _untrusted_certificate(err: BaseException) -> bool:
    """Whether a connection error is a TLS certificate verification failure (somewhere in its chain)."""
    seen: BaseException | None = err
    for _ in range(10):
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _describe(err: BaseException) -> str:
    if isinstance(err, httpx.HTTPStatusError):
        return f"HTTP {err.response.status_code} from {err.request.url}"
    if isinstance(err, httpx.TransportError):
        return f"{type(err).__name__}: {err or 'no answer'}"
    return str(err)


def _read_ca_file(path: str) -> bytes:
    """A CA bundle file, only if it resolves (symlinks followed) under one of :data:`CA_DIRECTORIES`."""
    real = os.path.realpath(path)
    if not os.path.isabs(path) or not any(real.startswith(root.rstrip("/") + "/") for root in CA_DIRECTORIES):
        raise ValueError(
            f"extra 'ca_bundle' path {path!r} is not under {', '.join(CA_DIRECTORIES)}: "
            "give the PEM text instead"
        )
    try:
        with open(real, "rb") as handle:
            return handle.read(1 << 22)
    except OSError as err:
        raise ValueError(f"extra 'ca_bundle' file {path} cannot be read: {err.strerror}") from None


def _check_ca_bundle(value: object) -> str | None:
    if not isinstance(value, str):
        return "extra 'ca_bundle' must be PEM text or a path"
    try:
        if value.lstrip().startswith("-----BEGIN"):
            check_ca_pem(value.encode(), "extra 'ca_bundle'")
        else:
            check_ca_pem(_read_ca_file(value), f"extra 'ca_bundle' file {value}")
    except ValueError as err:
        return str(err)
    return None


def _proxy_configured() -> bool:
    names = ("https_proxy", "http_proxy", "all_proxy")
    return any(os.environ.get(name) or os.environ.get(name.upper()) for name in names)


def _write_private(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
