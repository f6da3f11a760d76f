#!/usr/bin/env bash
# Runs flatcar-airflow's checks and test suite on a fresh Debian 12 machine (as root) or a developer's.
#
# It installs what the tests need first: Debian packages that are missing, uv, and the locked Python
# dependencies into .venv (uv.lock; nothing is resolved anew); and it starts dockerd when `docker info`
# fails. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Debian packages the tests use: git and bash for the scripts repositories; a real docker engine, sshd +
# rsync (build cache writes), curl + openssl (HTTPS reads, test CA), busybox-static (the test images' root
# file system), the compressors of the build artifacts (zstd, bzip2, lbzip2, xz-utils), procps and
# util-linux (pgrep, setsid, flock), debootstrap (the Debian base of the docker runner image) and gnupg
# (signed artifacts).
debs=(git bash docker.io openssh-server openssh-client rsync busybox-static zstd curl openssl bzip2 lbzip2 xz-utils
    procps util-linux debootstrap gnupg)
missing=()
if command -v dpkg-query >/dev/null 2>&1; then
    for deb in "${debs[@]}"; do
        [[ $(dpkg-query -W -f='${db:Status-Status}' "$deb" 2>/dev/null) == installed ]] || missing+=("$deb")
    done
else
    for tool in git bash; do
        command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
    done
fi
if ((${#missing[@]})); then
    echo "run-tests: installing Debian packages: ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The docker engine is not running when a machine starts: start it (detached, it outlives this script).
if command -v docker >/dev/null 2>&1 && ! docker info >/dev/null 2>&1; then
    echo "run-tests: starting dockerd" >&2
    setsid nohup dockerd --host unix:///var/run/docker.sock </dev/null >/var/log/dockerd.log 2>&1 &
    for _ in $(seq 60); do
        docker info >/dev/null 2>&1 && break
        sleep 1
    done
    if ! docker info >/dev/null 2>&1; then
        echo "run-tests: dockerd did not answer within 60 s; see /var/log/dockerd.log" >&2
        exit 1
    fi
fi

python=${PYTHON:-}
if [[ -z $python ]]; then
    for candidate in python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1; then python=$candidate; break; fi
    done
fi
if ! "$python" -m uv --version >/dev/null 2>&1; then
    echo "run-tests: installing uv" >&2
    "$python" -m pip install --quiet --disable-pip-version-check uv
fi

export UV_PYTHON_DOWNLOADS=never
"$python" -m uv sync --quiet --frozen --extra test --python "$python"

.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/pytest "$@"
