#!/bin/bash
# flatcar-airflow preflight: what Flatcar's step scripts need on a build host, checked in seconds.
#
# INPUTS (environment; every value set by flatcar_airflow/preflight, none from a user's text unchecked):
#   PREFLIGHT_ROOT          the runner's root directory (work trees, mirrors, jobs): its free space counts
#   PREFLIGHT_MIN_FREE_GB   the least free space (GiB) under PREFLIGHT_ROOT, and in docker's data root
#   PREFLIGHT_TOOLS         space-separated commands the scripts run
#   PREFLIGHT_CACHE_SERVER, PREFLIGHT_CACHE_PORT   the build cache's ssh address (BUILDCACHE_SERVER)
#   PREFLIGHT_CACHE_URL     the build cache's HTTPS base URL; PREFLIGHT_CA_PEM its CA certificates (PEM)
#   PREFLIGHT_URLS          space-separated URLs the scripts download from (registry, release mirror)
#   PREFLIGHT_NETWORK       error | warn: how an unreachable PREFLIGHT_URLS counts
# OUTPUTS: one line per check on standard output, tab-separated: CHECK <name> <ok|warn|error> <detail>.
#          Exit status 0 (the caller decides from the lines).
set -u
export LC_ALL=C

report() { printf 'CHECK\t%s\t%s\t%s\n' "$1" "$2" "$3"; }

missing=()
for tool in ${PREFLIGHT_TOOLS:-}; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
    report tools error "missing on the build host: ${missing[*]} (install them: docs/runners.md)"
else
    report tools ok "${PREFLIGHT_TOOLS:-}"
fi

if ! command -v sudo >/dev/null 2>&1; then
    report sudo error "no sudo on the build host; the scripts need non-interactive sudo (docs/runners.md)"
elif sudo -n true >/dev/null 2>&1; then
    report sudo ok "non-interactive sudo works"
else
    report sudo error "sudo asks for a password; the build user needs non-interactive sudo (NOPASSWD)"
fi

docker_root=""
if ! command -v docker >/dev/null 2>&1; then
    report docker error "no docker command on the build host"
elif info=$(timeout 20 docker info --format '{{.ServerVersion}} {{.DockerRootDir}}' 2>&1); then
    docker_root=${info#* }
    report docker ok "docker engine ${info%% *} reachable"
else
    report docker error "the docker engine is not reachable: $(printf '%s' "$info" | tail -n 1)"
fi

free_check() { # NAME PATH
    local path=$2 avail
    while [[ ! -e $path && $path != / ]]; do path=$(dirname "$path"); done
    if ! avail=$(df -Pk "$path" 2>/dev/null | awk 'NR == 2 { print $4 }') || [[ -z $avail ]]; then
        report "$1" warn "cannot read the free space of $path"
        return
    fi
    local gib=$((avail / 1048576)) need=${PREFLIGHT_MIN_FREE_GB:-0}
    if ((avail < need * 1048576)); then
        report "$1" error "disk: ${gib} GiB free under $path, the configuration asks for ${need} GiB"
    else
        report "$1" ok "${gib} GiB free under $path"
    fi
}
free_check disk "${PREFLIGHT_ROOT:-/}"
if [[ -n $docker_root && -d $docker_root ]]; then
    free_check docker-disk "$docker_root"
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
curl_opts=(--silent --show-error --output /dev/null --write-out '%{http_code}' --connect-timeout 5 --max-time 10)

if [[ -n ${PREFLIGHT_CACHE_SERVER:-} ]]; then
    if command -v ssh-keyscan >/dev/null 2>&1; then
        if out=$(ssh-keyscan -T 5 -p "${PREFLIGHT_CACHE_PORT:-22}" "$PREFLIGHT_CACHE_SERVER" 2>&1) &&
            grep -q '^[^#]' <<<"$out"; then
            report cache-ssh ok "$PREFLIGHT_CACHE_SERVER port ${PREFLIGHT_CACHE_PORT:-22} answers ssh"
        else
            report cache-ssh error "the build cache $PREFLIGHT_CACHE_SERVER does not answer ssh on port ${PREFLIGHT_CACHE_PORT:-22}"
        fi
    else
        report cache-ssh warn "no ssh-keyscan to check the build cache's ssh port"
    fi
fi

if [[ -n ${PREFLIGHT_CACHE_URL:-} ]]; then
    ca=()
    if [[ -n ${PREFLIGHT_CA_PEM:-} ]]; then
        printf '%s\n' "$PREFLIGHT_CA_PEM" >"$tmp/ca.pem"
        ca=(--cacert "$tmp/ca.pem")
    fi
    if code=$(curl "${curl_opts[@]}" "${ca[@]}" "$PREFLIGHT_CACHE_URL/" 2>"$tmp/err"); then
        report cache-https ok "$PREFLIGHT_CACHE_URL/ answers HTTP $code"
    else
        report cache-https error "the build cache $PREFLIGHT_CACHE_URL/ cannot be read: $(tail -n 1 "$tmp/err")"
    fi
fi

# The scripts' downloads: checked concurrently (each up to 10 s), reported in order.
n=0
for url in ${PREFLIGHT_URLS:-}; do
    n=$((n + 1))
    (curl "${curl_opts[@]}" "$url" >"$tmp/url-$n.code" 2>"$tmp/url-$n.err"; echo $? >"$tmp/url-$n.rc") &
done
wait
n=0
for url in ${PREFLIGHT_URLS:-}; do
    n=$((n + 1))
    if [[ $(cat "$tmp/url-$n.rc") == 0 ]]; then
        report network ok "$url answers HTTP $(cat "$tmp/url-$n.code")"
    else
        report network "${PREFLIGHT_NETWORK:-warn}" "$url cannot be reached: $(tail -n 1 "$tmp/url-$n.err")"
    fi
done
exit 0
