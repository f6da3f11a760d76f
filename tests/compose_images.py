"""The images of the compose stack, built locally for its test (no registry is reachable here).

The shipped compose file names the usual upstream images (apache/airflow, postgres, redis, debian); the
test builds stand-ins for them on the debootstrapped Debian base of tests/images.py instead (with the
package sources of debian:bookworm-slim), then builds
the project's own Dockerfiles on top, exactly as a user would, only with other ``AIRFLOW_BASE``/``BASE``
build arguments:

=======================================  ==================================================================
``flatcar-airflow-test/debian:...-slim`` the debootstrapped base with debian:bookworm-slim's package
                                         sources (stable updates and the security archive)
``flatcar-airflow-test/airflow:...``     Debian's python3.11 + ``pip install apache-airflow==3.3.2`` (the
                                         lock's versions), laid out like the official image where
                                         docker/airflow/Dockerfile relies on it: user ``airflow`` (uid
                                         50000, group 0), a virtualenv in ``~airflow/.local`` on PATH,
                                         ``AIRFLOW_HOME=/opt/airflow``, ``dumb-init`` + ``/entrypoint``
``flatcar-airflow-test/postgres:15``     Debian's postgresql-15 behind the official image's interface
                                         (POSTGRES_USER/PASSWORD/DB, /var/lib/postgresql/data, pg_isready)
``flatcar-airflow-test/redis:7``         Debian's redis-server (redis-cli for the healthcheck)
``flatcar-airflow-test/build-ca``        this host's CA bundle only (``BUILD_CA_FROM``: PyPI's TLS is
                                         intercepted by a proxy here)
``flatcar-airflow:test``                 docker/airflow/Dockerfile (context: the repository, .dockerignore)
``flatcar-buildcache:test``              docker/buildcache/Dockerfile
=======================================  ==================================================================

Every image carries a label with the digest of what it was built from (Dockerfile, context files, build
arguments, base image ids), so a second run reuses it; a change rebuilds it.
"""

from __future__ import annotations

import fnmatch
import hashlib
import shutil
import subprocess
import tempfile
import time
import tomllib
from pathlib import Path

from images import BASE, ROOT, _ensure_base, _image_label

__all__ = ["ComposeImages", "build_compose_images"]

LABEL = "io.flatcar-airflow.digest"
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
SLIM = "flatcar-airflow-test/debian:bookworm-slim"
AIRFLOW_BASE = "flatcar-airflow-test/airflow:3.3.2-python3.11"
POSTGRES = "flatcar-airflow-test/postgres:15"
REDIS = "flatcar-airflow-test/redis:7"
BUILD_CA = "flatcar-airflow-test/build-ca:latest"
AIRFLOW = "flatcar-airflow:test"
BUILDCACHE = "flatcar-buildcache:test"

# debian:bookworm-slim's package sources (the debootstrapped base has bookworm main only): the stable
# updates and the security archive, which has the rsync whose rrsync the build cache needs (-absolute).
_SLIM_DOCKERFILE = """\
FROM {base}
RUN rm -f /etc/apt/sources.list
COPY debian.sources /etc/apt/sources.list.d/debian.sources
"""
_DEBIAN_SOURCES = """\
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""

_AIRFLOW_BASE_DOCKERFILE = """\
FROM {base}
ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 LC_ALL=C.UTF-8
RUN set -eux; \\
    apt-get update; \\
    apt-get install -y --no-install-recommends ca-certificates curl dumb-init git openssh-client procps \\
        python3 python3-venv rsync; \\
    rm -rf /var/lib/apt/lists/*; \\
    useradd --uid 50000 --gid 0 --home-dir /home/airflow --create-home --shell /bin/bash airflow; \\
    install -d -o airflow -g 0 -m 0775 /opt/airflow /opt/airflow/dags /opt/airflow/logs
COPY build-ca.crt /tmp/build-ca.crt
COPY constraints.txt /home/airflow/constraints.txt
USER airflow
ENV VIRTUAL_ENV=/home/airflow/.local PATH=/home/airflow/.local/bin:$PATH AIRFLOW_HOME=/opt/airflow \\
    AIRFLOW_UID=50000 AIRFLOW_USER_HOME_DIR=/home/airflow AIRFLOW__CORE__LOAD_EXAMPLES=false
RUN python3 -m venv /home/airflow/.local \\
    && PIP_CERT=/tmp/build-ca.crt pip install --no-cache-dir --disable-pip-version-check \\
        --constraint /home/airflow/constraints.txt apache-airflow==3.3.2 \\
    && airflow version
COPY entrypoint /entrypoint
WORKDIR /opt/airflow
EXPOSE 8080
ENTRYPOINT ["/usr/bin/dumb-init", "--", "/entrypoint"]
CMD []
"""

# The official image's rules: no argument: bash; bash or python: run as given; anything else is an
# airflow command ("airflow" itself may be given or not).
_AIRFLOW_ENTRYPOINT = """\
#!/bin/bash
# A stand-in for apache/airflow's /entrypoint (tests only).
set -euo pipefail
if (($# == 0)); then exec bash; fi
case $1 in
bash | python | python3) exec "$@" ;;
airflow) shift ;;
esac
exec airflow "$@"
"""

_POSTGRES_DOCKERFILE = """\
FROM {base}
ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8
RUN set -eux; \\
    apt-get update; \\
    apt-get install -y --no-install-recommends postgresql-15; \\
    rm -rf /var/lib/apt/lists/* /var/lib/postgresql/15 /etc/postgresql/15
ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data
COPY entrypoint /usr/local/bin/docker-entrypoint.sh
EXPOSE 5432
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
CMD ["postgres"]
"""

_POSTGRES_ENTRYPOINT = """\
#!/bin/bash
# A stand-in for the official postgres image's entry point (tests only): a cluster in $PGDATA owned by
# POSTGRES_USER (password POSTGRES_PASSWORD), database POSTGRES_DB, password logins from the network.
set -euo pipefail
install -d -o postgres -g postgres -m 0700 "$PGDATA"
install -d -o postgres -g postgres -m 0775 /var/run/postgresql
as_postgres() { setpriv --reuid postgres --regid postgres --init-groups -- "$@"; }
if [[ ! -s $PGDATA/PG_VERSION ]]; then
    pwfile=$(mktemp)
    printf '%s\\n' "${POSTGRES_PASSWORD:?}" >"$pwfile"
    chown postgres "$pwfile"
    as_postgres initdb -D "$PGDATA" -U "${POSTGRES_USER:-postgres}" --pwfile="$pwfile" \\
        --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    rm -f "$pwfile"
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
    as_postgres pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
    db=${POSTGRES_DB:-${POSTGRES_USER:-postgres}}
    if [[ $db != postgres ]]; then
        as_postgres createdb -U "${POSTGRES_USER:-postgres}" "$db"
    fi
    as_postgres pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
fi
exec setpriv --reuid postgres --regid postgres --init-groups -- \\
    postgres -D "$PGDATA" -c listen_addresses='*' -c unix_socket_directories=/var/run/postgresql
"""

_REDIS_DOCKERFILE = """\
FROM {base}
ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8
RUN set -eux; \\
    apt-get update; \\
    apt-get install -y --no-install-recommends redis-server; \\
    rm -rf /var/lib/apt/lists/*
USER redis
EXPOSE 6379
CMD ["redis-server", "--bind", "0.0.0.0", "--protected-mode", "no", "--save", "", "--appendonly", "no"]
"""


class ComposeImages(dict):
    """The compose file's image variables (name → image), plus how long the builds took."""

    seconds: float = 0.0
    built: list[str]


def _run(cmd: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, **kwargs
    )
    if proc.returncode != 0:
        output = (proc.stdout + proc.stderr)[-6000:]
        raise AssertionError(f"{' '.join(cmd[:4])} … failed ({proc.returncode}):\n{output}")
    return proc


def _image_id(image: str) -> str:
    proc = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", image], capture_output=True, text=True
    )
    return proc.stdout.strip() if proc.returncode == 0 else ""


def _dangling() -> set[str]:
    out = subprocess.run(
        ["docker", "images", "--quiet", "--no-trunc", "--filter", "dangling=true"],
        capture_output=True,
        text=True,
    ).stdout
    return set(out.split())


def _digest(*parts: str | bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()[:20]


def _context_files(root: Path, dockerignore: Path) -> list[Path]:
    """Files of ``root`` that a build sees through ``dockerignore`` (the whitelist form it uses:
    ``*``, then ``!PATH`` entries, then ``**/NAME`` exclusions)."""
    allowed, excluded = [], []
    for line in dockerignore.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or line == "*":
            continue
        if line.startswith("!"):
            allowed.append(line[1:].rstrip("/"))
        else:
            excluded.append(line.removeprefix("**/"))
    files = []
    for entry in allowed:
        path = root / entry
        candidates = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for candidate in candidates:
            parts = candidate.relative_to(root).parts
            if not any(fnmatch.fnmatch(part, pattern) for part in parts for pattern in excluded):
                files.append(candidate)
    return files


def _build(
    tag: str, context: Path, digest: str, built: list[str], *, dockerfile: Path | None = None, **args: str
) -> str:
    """``docker build`` ``context`` as ``tag`` unless an image with this digest label exists."""
    if _image_label(tag, LABEL) == digest:
        return tag
    before, previous = _dangling(), _image_id(tag)
    cmd = ["docker", "build", "--network", "host", "--label", f"{LABEL}={digest}", "-t", tag]
    if dockerfile is not None:
        cmd += ["-f", str(dockerfile)]
    for name, value in args.items():
        cmd += ["--build-arg", f"{name}={value}"]
    _run([*cmd, str(context)], timeout=2400)
    built.append(tag)
    # The replaced image and the intermediate stages (untagged) are of no further use.
    for image in sorted(_dangling() - before - {_image_id(tag)}):
        subprocess.run(["docker", "image", "rm", image], capture_output=True, check=False)
    if previous and previous != _image_id(tag):
        subprocess.run(["docker", "image", "rm", previous], capture_output=True, check=False)
    return tag


def _lock_constraints() -> str:
    """Every package version of uv.lock as pip constraints (markers do not matter for constraints)."""
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    lines = [
        f"{package['name']}=={package['version']}"
        for package in lock["package"]
        if "registry" in package.get("source", {})
    ]
    return "\n".join(sorted(lines)) + "\n"


def _small_image(
    tag: str, dockerfile: str, files: dict[str, str | bytes], built: list[str], base: str = SLIM
) -> str:
    """A test-only image from a Dockerfile text and files (executable if they start with ``#!``)."""
    text = dockerfile.format(base=base)
    names = sorted(files)
    digest = _digest(text, _image_id(base), *(f"{name}\0" for name in names), *(files[n] for n in names))
    if _image_label(tag, LABEL) == digest:
        return tag
    with tempfile.TemporaryDirectory(prefix="fa-compose-image-") as tmp:
        (Path(tmp) / "Dockerfile").write_text(text)
        for name, content in files.items():
            path = Path(tmp) / name
            path.write_bytes(content.encode() if isinstance(content, str) else content)
            path.chmod(0o755 if path.read_bytes().startswith(b"#!") else 0o644)
        return _build(tag, Path(tmp), digest, built)


def _build_ca(built: list[str]) -> str:
    """An image holding this host's CA bundle only (docker import of a one-file tree)."""
    bundle = HOST_CA.read_bytes()
    digest = _digest(bundle)
    if _image_label(BUILD_CA, LABEL) == digest:
        return BUILD_CA
    with tempfile.TemporaryDirectory(prefix="fa-build-ca-") as tmp:
        certs = Path(tmp) / "etc/ssl/certs"
        certs.mkdir(parents=True)
        shutil.copyfile(HOST_CA, certs / "ca-certificates.crt")
        tar = subprocess.Popen(["tar", "-C", tmp, "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(
            ["docker", "import", "--change", f"LABEL {LABEL}={digest}", "-", BUILD_CA],
            stdin=tar.stdout,
            check=True,
            capture_output=True,
        )
        tar.wait()
    built.append(BUILD_CA)
    return BUILD_CA


def build_compose_images() -> ComposeImages:
    """Build (or reuse) every image the stack needs except the runner's; returns the image variables."""
    started = time.monotonic()
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        raise AssertionError("the docker engine does not answer (scripts/run-tests.sh starts dockerd)")
    if not HOST_CA.exists():
        raise AssertionError(f"{HOST_CA} is missing (Debian package ca-certificates)")
    built: list[str] = []
    _ensure_base()
    slim = _small_image(SLIM, _SLIM_DOCKERFILE, {"debian.sources": _DEBIAN_SOURCES}, built, base=BASE)
    build_ca = _build_ca(built)
    airflow_base = _small_image(
        AIRFLOW_BASE,
        _AIRFLOW_BASE_DOCKERFILE,
        {
            "entrypoint": _AIRFLOW_ENTRYPOINT,
            "constraints.txt": _lock_constraints(),
            "build-ca.crt": HOST_CA.read_bytes(),
        },
        built,
    )
    postgres = _small_image(POSTGRES, _POSTGRES_DOCKERFILE, {"entrypoint": _POSTGRES_ENTRYPOINT}, built)
    redis = _small_image(REDIS, _REDIS_DOCKERFILE, {}, built)

    # Both build from the repository through .dockerignore; each digest covers the files it copies.
    context = _context_files(ROOT, ROOT / ".dockerignore")

    def files(*skip: str, only: tuple[str, ...] = ()) -> list[str | bytes]:
        chosen = [
            path
            for path in context
            if not str(path.relative_to(ROOT)).startswith(skip)
            and (not only or str(path.relative_to(ROOT)).startswith(only))
        ]
        tree = [f"{p.relative_to(ROOT)}\0{oct(p.stat().st_mode & 0o111)}" for p in chosen]
        return [*tree, *(p.read_bytes() for p in chosen)]

    airflow = _build(
        AIRFLOW,
        ROOT,
        _digest("airflow", _image_id(airflow_base), _image_id(build_ca), *files("docker/buildcache/")),
        built,
        dockerfile=ROOT / "docker/airflow/Dockerfile",
        AIRFLOW_BASE=airflow_base,
        BUILD_CA_FROM=build_ca,
    )
    buildcache = _build(
        BUILDCACHE,
        ROOT,
        _digest("buildcache", _image_id(slim), *files(only=("flatcar_airflow/", "docker/buildcache/"))),
        built,
        dockerfile=ROOT / "docker/buildcache/Dockerfile",
        BASE=slim,
    )
    images = ComposeImages(
        FLATCAR_AIRFLOW_IMAGE=airflow,
        FLATCAR_BUILDCACHE_IMAGE=buildcache,
        POSTGRES_IMAGE=postgres,
        REDIS_IMAGE=redis,
        AIRFLOW_BASE=airflow_base,
        BUILDCACHE_BASE=slim,
    )
    images.built = built
    images.seconds = time.monotonic() - started
    return images
