# shellcheck shell=bash
# What flatcar-airflow needs on a Debian 12/13 machine, installed when missing: sourced by
# scripts/run-tests.sh (the tests) and scripts/quickstart.sh (the main job), so both install alike.
#
#   fa_install_debs PKG...   apt-get install the Debian packages that are not installed yet
#   fa_start_dockerd         start dockerd (detached, it outlives the caller) when `docker info` fails
#   fa_sync_venv [EXTRA...]  uv from PyPI if missing, then the locked dependencies (uv.lock) into .venv
#                            (FA_SYNC_INEXACT=1: keep packages the lock does not name)
#
# Run from the repository root (the callers cd there first).

# Debian packages of the product: git for the scripts repositories; a docker engine (the scripts start SDK
# containers); the build cache service (openssh-server, rsync with rrsync, nginx, openssl for its keys and
# certificates); the scripts' own tools (curl, the artifacts' compressors zstd, bzip2, lbzip2, xz-utils;
# gnupg for signed artifacts); procps and util-linux (pgrep, setsid, flock); busybox-static for the
# demo's seed SDK image.
FA_DEBS=(git bash docker.io openssh-server openssh-client rsync nginx busybox-static zstd curl openssl
    bzip2 lbzip2 xz-utils procps util-linux gnupg python3 jq sudo)

fa_say() { printf '%s: %s\n' "${FA_WHO:-flatcar-airflow}" "$*" >&2; }

fa_install_debs() {
    local deb missing=()
    if command -v dpkg-query >/dev/null 2>&1; then
        for deb in "$@"; do
            [[ $(dpkg-query -W -f='${db:Status-Status}' "$deb" 2>/dev/null) == installed ]] || missing+=("$deb")
        done
    else
        for deb in git bash; do
            command -v "$deb" >/dev/null 2>&1 || missing+=("$deb")
        done
    fi
    ((${#missing[@]})) || return 0
    local sudo=()
    if ((EUID != 0)); then
        command -v sudo >/dev/null 2>&1 || {
            fa_say "these Debian packages are missing and there is no sudo to install them: ${missing[*]}"
            return 1
        }
        sudo=(sudo)
    fi
    fa_say "installing Debian packages: ${missing[*]}"
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

fa_start_dockerd() {
    command -v docker >/dev/null 2>&1 || return 0
    docker info >/dev/null 2>&1 && return 0
    if ((EUID != 0)); then
        fa_say "the docker engine does not answer (docker info); start it (sudo systemctl start docker) or join the docker group"
        return 1
    fi
    fa_say "starting dockerd"
    setsid nohup dockerd --host unix:///var/run/docker.sock </dev/null >/var/log/dockerd.log 2>&1 &
    local _
    for _ in $(seq 60); do
        docker info >/dev/null 2>&1 && return 0
        sleep 1
    done
    fa_say "dockerd did not answer within 60 s; see /var/log/dockerd.log"
    return 1
}

fa_sync_venv() {
    local python=${PYTHON:-} candidate extra args=()
    if [[ -z $python ]]; then
        for candidate in python3.11 python3; do
            if command -v "$candidate" >/dev/null 2>&1; then python=$candidate; break; fi
        done
    fi
    if ! "$python" -m uv --version >/dev/null 2>&1; then
        fa_say "installing uv"
        "$python" -m pip install --quiet --disable-pip-version-check uv ||
            "$python" -m pip install --quiet --disable-pip-version-check --break-system-packages uv
    fi
    for extra in "$@"; do args+=(--extra "$extra"); done
    [[ ${FA_SYNC_INEXACT:-0} == 1 ]] && args+=(--inexact)
    UV_PYTHON_DOWNLOADS=never "$python" -m uv sync --quiet --frozen "${args[@]}" --python "$python"
}
