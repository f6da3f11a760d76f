"""A Flatcar build cache: sshd for rsync writes, nginx for HTTPS reads of the same directory.

Flatcar's scripts write the cache with ``ssh USER@SERVER "mkdir -p PREFIX/…"`` and ``rsync -e ssh …
USER@SERVER:PREFIX/…`` and read it with ``curl https://SERVER/…`` (port 443, no redirects). This module
makes such a server from Debian's packages (openssh-server, rsync's rrsync, nginx, openssl), all its state
under one directory:

==========================  ================================================================================
``data/``                   the cache (``BUILDCACHE_PATH_PREFIX``), served read-only over HTTPS
``ssh/host_ed25519_key``    the sshd host key (generated once)
``ssh/writer_ed25519``      the write key of the ``flatcar_buildcache`` connection (generated once)
``ssh/writers.pub``         public keys allowed to write (one a line; add one to rotate keys); each gets
                            ``restrict,command="restricted-shell.sh DATA"`` in ``authorized_keys``: rsync
                            and ``mkdir -p`` under ``data/`` and nothing else
``tls/``                    ``ca.pem``/``ca.key`` (a CA generated once) and ``server.pem``/``server.key``
                            (re-issued when the server's names change); or the operator's certificate
``settings.json``           the settings of :meth:`BuildCacheServer.init`, reused by later starts
``sshd_config``, ``nginx.conf``, ``authorized_keys``, ``log/``, ``run/``  written at every start
==========================  ================================================================================

Only the standard library is used, so the same code runs the cache container
(``python3 -m flatcar_airflow.buildcache_server serve``) without Airflow installed.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["BuildCacheServer", "ServerError", "Settings"]

RESTRICTED_SHELL = Path(__file__).with_name("restricted-shell.sh")
_SSHD = "/usr/sbin/sshd"
_NGINX = "/usr/sbin/nginx"
_RRSYNC = "/usr/bin/rrsync"
_MIME_TYPES = "/etc/nginx/mime.types"


class ServerError(RuntimeError):
    """The build cache server cannot be set up or started; the message says what is missing or wrong."""


@dataclass
class Settings:
    """How clients reach the cache. ``server`` is ``BUILDCACHE_SERVER``: a name or IP in the certificate."""

    server: str = "127.0.0.1"
    listen: str = ""  # address sshd and nginx bind; empty: ``server`` if it is an IP, else all
    ssh_port: int = 2222
    https_port: int = 443
    user: str = ""  # ssh login of the writers (and nginx's worker user); empty: the user running it
    data: str = ""  # the cache directory; empty: <state>/data
    names: list[str] = field(default_factory=list)  # more names for the certificate
    tls_cert: str = ""  # the operator's certificate and key (PEM files) instead of the generated CA's
    tls_key: str = ""

    def listen_address(self) -> str:
        if self.listen:
            return self.listen
        try:
            ipaddress.ip_address(self.server)
        except ValueError:
            return "0.0.0.0"  # noqa: S104 - a named server listens on all addresses
        return self.server


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, **kwargs
        )
    except FileNotFoundError:
        raise ServerError(
            f"{cmd[0]} is not installed (see docs/buildcache.md for the Debian packages)"
        ) from None
    if proc.returncode != 0:
        raise ServerError(f"{' '.join(cmd[:3])} failed ({proc.returncode}): {proc.stderr.strip()[-800:]}")
    return proc


class BuildCacheServer:
    """The cache server whose state lives in ``state``; :meth:`init` once, then :meth:`start`/:meth:`stop`."""

    def __init__(self, state: str | os.PathLike[str]) -> None:
        self.state = Path(state).absolute()
        self._processes: list[subprocess.Popen] = []

    # -- settings and files ------------------------------------------------------------------------------

    @property
    def settings_file(self) -> Path:
        return self.state / "settings.json"

    def settings(self) -> Settings:
        try:
            data = json.loads(self.settings_file.read_text())
        except FileNotFoundError:
            raise ServerError(f"no build cache in {self.state}: run init first") from None
        return Settings(**data)

    @property
    def data(self) -> Path:
        data = self.settings().data
        return Path(data) if data else self.state / "data"

    @property
    def ca_file(self) -> Path | None:
        """The CA certificate clients trust (None with the operator's own certificate)."""
        return None if self.settings().tls_cert else self.state / "tls/ca.pem"

    @property
    def writer_key(self) -> Path:
        return self.state / "ssh/writer_ed25519"

    def host_key(self) -> str:
        """The sshd host key as ``<type> <base64>`` (the connection's ``host_key``)."""
        return " ".join((self.state / "ssh/host_ed25519_key.pub").read_text().split()[:2])

    def init(self, settings: Settings | None = None) -> Settings:
        """Create the state (idempotent: keys and the CA are kept; the settings are replaced if given)."""
        if settings is None:
            settings = self.settings() if self.settings_file.exists() else Settings()
        if not settings.user:
            settings.user = pwd.getpwuid(os.geteuid()).pw_name
        try:
            pwd.getpwnam(settings.user)
        except KeyError:
            raise ServerError(f"the cache's ssh user {settings.user!r} does not exist on this host") from None
        for port, what in ((settings.ssh_port, "ssh_port"), (settings.https_port, "https_port")):
            if not 0 < port < 65536:
                raise ServerError(f"{what} {port} is not a TCP port")
        if bool(settings.tls_cert) != bool(settings.tls_key):
            raise ServerError("tls_cert and tls_key go together")
        for directory, mode in (("", 0o755), ("ssh", 0o700), ("tls", 0o700), ("log", 0o755), ("run", 0o755)):
            (self.state / directory).mkdir(parents=True, exist_ok=True)
            (self.state / directory).chmod(mode)
        data = Path(settings.data) if settings.data else self.state / "data"
        data.mkdir(parents=True, exist_ok=True)
        settings.data = str(data.resolve())
        if os.geteuid() == 0 and settings.user != "root":
            entry = pwd.getpwnam(settings.user)
            os.chown(data, entry.pw_uid, entry.pw_gid)
        self._keys()
        if not settings.tls_cert:
            self._tls(settings)
        tmp = self.settings_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(settings), indent=2) + "\n")
        tmp.replace(self.settings_file)
        return settings

    def _keys(self) -> None:
        ssh = self.state / "ssh"
        for name, comment in (
            ("host_ed25519_key", "flatcar-buildcache host"),
            ("writer_ed25519", "flatcar-buildcache writer"),
        ):
            if not (ssh / name).exists():
                _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(ssh / name)])
        writers = ssh / "writers.pub"
        public = (ssh / "writer_ed25519.pub").read_text().strip()
        if not writers.exists():
            writers.write_text(public + "\n")

    def _tls(self, settings: Settings) -> None:
        tls = self.state / "tls"
        ca_key, ca_pem = tls / "ca.key", tls / "ca.pem"
        ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
        if not ca_pem.exists():
            subject = f"/CN=flatcar-airflow build cache CA {socket.gethostname()[:30]}"
            _run(
                [
                    *("openssl", "req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca_pem)),
                    *("-days", "3650", "-subj", subject, "-addext", "basicConstraints=critical,CA:TRUE"),
                    *("-addext", "keyUsage=critical,keyCertSign,cRLSign"),
                ]
            )
            ca_pem.chmod(0o644)
        names = list(dict.fromkeys([settings.server, *settings.names, "localhost"]))
        alt = []
        for name in names:
            try:
                ipaddress.ip_address(name)
                alt.append(f"IP:{name}")
            except ValueError:
                alt.append(f"DNS:{name}")
        wanted = ",".join(alt)
        stamp = tls / "server.names"
        if (tls / "server.pem").exists() and stamp.exists() and stamp.read_text() == wanted:
            return
        key, csr, cert, ext = tls / "server.key", tls / "server.csr", tls / "server.pem", tls / "server.ext"
        _run(
            ["openssl", "req", *ec, "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={settings.server}"]
        )
        ext.write_text(
            f"subjectAltName={wanted}\nbasicConstraints=CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
        )
        sign = ["-CA", str(ca_pem), "-CAkey", str(ca_key), "-CAcreateserial", "-days", "825"]
        _run(["openssl", "x509", "-req", "-in", str(csr), *sign, "-out", str(cert), "-extfile", str(ext)])
        csr.unlink()
        stamp.write_text(wanted)

    def connection(self) -> dict:
        """The ``flatcar_buildcache`` Airflow connection for this cache (it holds the private write key)."""
        settings = self.settings()
        http_url = f"https://{settings.server}" + (
            "" if settings.https_port == 443 else f":{settings.https_port}"
        )
        extra = {
            "path_prefix": settings.data,
            "private_key": self.writer_key.read_text(),
            "http_url": http_url,
            "host_key": self.host_key(),
        }
        if self.ca_file is not None:
            extra["ca_bundle"] = self.ca_file.read_text()
        return {
            "conn_type": "flatcar_buildcache",
            "host": settings.server,
            "port": settings.ssh_port,
            "login": settings.user,
            "description": "Flatcar build cache (flatcar-airflow buildcache)",
            "extra": extra,
        }

    # -- configuration of the daemons ---------------------------------------------------------------------

    def _write_configs(self, settings: Settings) -> tuple[Path, Path]:
        for tool in (_SSHD, _NGINX, _RRSYNC):
            if not Path(tool).exists():
                raise ServerError(f"{tool} is not installed (Debian packages: openssh-server, rsync, nginx)")
        usage = subprocess.run([_RRSYNC, "-h"], capture_output=True, text=True, check=False)
        if "-absolute" not in usage.stdout + usage.stderr:
            raise ServerError(
                f"{_RRSYNC} has no -absolute option, which the scripts' absolute cache paths need: install "
                "an rsync whose rrsync has it (Debian 12: rsync 3.5.0 from bookworm-security)"
            )
        ssh = self.state / "ssh"
        shell = self.state / "restricted-shell.sh"
        shutil.copyfile(RESTRICTED_SHELL, shell)
        shell.chmod(0o755)
        forced = f'restrict,command="{shell} {settings.data}"'
        lines = []
        for line in (ssh / "writers.pub").read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                if not line.startswith(("ssh-", "ecdsa-", "sk-")):
                    raise ServerError(f"{ssh / 'writers.pub'}: {line[:40]!r} is not an ssh public key")
                lines.append(f"{forced} {line}")
        # Beside ssh/ (0700, the private keys): sshd reads it as the ssh user, who may not be root.
        authorized_keys = self.state / "authorized_keys"
        authorized_keys.write_text("\n".join(lines) + "\n")
        authorized_keys.chmod(0o644)
        listen = settings.listen_address()
        root_login = "forced-commands-only" if settings.user == "root" else "no"
        sshd_config = self.state / "sshd_config"
        sshd_config.write_text(
            f"Port {settings.ssh_port}\nListenAddress {listen}\nHostKey {ssh / 'host_ed25519_key'}\n"
            f"AuthorizedKeysFile {authorized_keys}\nPidFile {self.state / 'run/sshd.pid'}\n"
            f"AllowUsers {settings.user}\nPermitRootLogin {root_login}\n"
            "StrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "PubkeyAuthentication yes\nAllowTcpForwarding no\nAllowAgentForwarding no\n"
            "AllowStreamLocalForwarding no\n"
            "X11Forwarding no\nPermitTunnel no\nPermitUserRC no\nPermitUserEnvironment no\n"
            "MaxStartups 100:30:200\nMaxSessions 50\nClientAliveInterval 30\nLogLevel INFO\n"
        )
        tls = self.state / "tls"
        cert = settings.tls_cert or str(tls / "server.pem")
        key = settings.tls_key or str(tls / "server.key")
        run, log = self.state / "run", self.state / "log"
        user = f"user {settings.user};\n" if os.geteuid() == 0 else ""
        temp = "".join(
            f"    {kind}_temp_path {run / ('nginx-' + kind)};\n"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        types = f"    include {_MIME_TYPES};\n" if Path(_MIME_TYPES).exists() else ""
        nginx_conf = self.state / "nginx.conf"
        nginx_conf.write_text(
            f"daemon off;\nworker_processes 2;\npid {run / 'nginx.pid'};\n"
            f"error_log {log / 'nginx-error.log'} warn;\n"
            f"{user}events {{ worker_connections 512; }}\n"
            "http {\n"
            f"{types}    default_type application/octet-stream;\n"
            f"    access_log {log / 'nginx-access.log'};\n{temp}"
            "    sendfile on;\n    server_tokens off;\n"
            "    server {\n"
            f"        listen {listen}:{settings.https_port} ssl;\n"
            f"        ssl_certificate {cert};\n        ssl_certificate_key {key};\n"
            f"        root {settings.data};\n"
            "        autoindex on;\n        autoindex_exact_size on;\n"
            "        location / { limit_except GET { deny all; } }\n"
            "    }\n}\n"
        )
        return sshd_config, nginx_conf

    # -- running ------------------------------------------------------------------------------------------

    def start(self, timeout: float = 20) -> None:
        """Start sshd and nginx in the background (own sessions) and wait until both listen."""
        settings = self.init()
        sshd_config, nginx_conf = self._write_configs(settings)
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(parents=True, exist_ok=True)
        _run([_SSHD, "-t", "-f", str(sshd_config)])
        _run([_NGINX, "-t", "-q", "-p", str(self.state), "-c", str(nginx_conf)])
        listen = settings.listen_address()
        probe = "127.0.0.1" if listen == "0.0.0.0" else listen  # noqa: S104
        for port in (settings.ssh_port, settings.https_port):
            if _listening(probe, port):
                raise ServerError(f"{probe}:{port} is in use already: is another build cache running?")
        log = self.state / "log"
        commands = (
            ("sshd", [_SSHD, "-D", "-f", str(sshd_config), "-E", str(log / "sshd.log")], settings.ssh_port),
            ("nginx", [_NGINX, "-p", str(self.state), "-c", str(nginx_conf)], settings.https_port),
        )
        try:
            for name, cmd, port in commands:
                with (log / f"{name}.out").open("ab") as out:
                    proc = subprocess.Popen(
                        cmd,
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                self._processes.append(proc)
                _wait_for_port(
                    probe,
                    port,
                    proc,
                    name,
                    timeout,
                    log / ("sshd.log" if name == "sshd" else "nginx-error.log"),
                )
        except BaseException:
            self.stop()
            raise

    @property
    def pids(self) -> list[int]:
        return [proc.pid for proc in self._processes if proc.poll() is None]

    def stop(self, timeout: float = 10) -> None:
        for proc in reversed(self._processes):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=timeout)
        self._processes.clear()

    def serve(self) -> int:
        """Run in the foreground until SIGTERM or SIGINT, or until sshd or nginx exits (in a container)."""
        stop = False

        def _stop(*_):
            nonlocal stop
            stop = True

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        self.start()
        settings = self.settings()
        print(
            f"flatcar build cache: {settings.data} over ssh {settings.user}@{settings.server}:"
            f"{settings.ssh_port} (rsync, mkdir -p) and https://{settings.server}:{settings.https_port}/",
            flush=True,
        )
        status = 0
        try:
            while not stop:
                dead = [proc for proc in self._processes if proc.poll() is not None]
                if dead:
                    print(f"flatcar build cache: {dead[0].args[0]} exited ({dead[0].returncode})", flush=True)
                    status = 1
                    break
                time.sleep(0.5)
        finally:
            self.stop()
        return status


def _listening(address: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((address, port)) == 0


def _wait_for_port(
    address: str, port: int, proc: subprocess.Popen, what: str, timeout: float, log: Path
) -> None:
    deadline = time.monotonic() + timeout
    while not _listening(address, port):
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
            state = (
                f"exited ({proc.returncode})"
                if proc.poll() is not None
                else f"does not listen on {address}:{port}"
            )
            raise ServerError(f"the build cache's {what} {state}: {tail}")
        time.sleep(0.1)
