#!/bin/bash
# Entry point of the build cache container (docker/buildcache/Dockerfile).
#
# INPUTS:  $1 serve (default): init the state from the environment, then run sshd and nginx in the
#                              foreground until SIGTERM or SIGINT (the python server stops both)
#             init [OPTION...] | connection [...]: the actions of `flatcar-airflow buildcache` (init
#                              takes its options from the variables below, then from OPTION...)
#          BUILDCACHE_SERVER   the name the clients use (the scripts' BUILDCACHE_SERVER; default buildcache)
#          BUILDCACHE_NAMES    more names for the certificate, blank-separated (e.g. the host's DNS name)
#          BUILDCACHE_SSH_PORT the sshd port (default 2222); HTTPS is always 443 (the scripts read 443)
#          BUILDCACHE_USER     the writers' ssh login: the user the container runs as (bincache), the
#                              only one a non-root sshd can serve
#          FLATCAR_BUILDCACHE_STATE  the state directory (the image's volume)
# OUTPUTS: the state (keys, CA, certificate, settings, data/) in FLATCAR_BUILDCACHE_STATE; init prints it
#          as JSON (the private write key is not printed: `connection` prints it, keep that secret).
set -euo pipefail

state=${FLATCAR_BUILDCACHE_STATE:-/var/lib/flatcar-buildcache}
cache() { python3 -m flatcar_airflow.buildcache_server --state "$state" "$@"; }

init() {
    local args=(--server "${BUILDCACHE_SERVER:-buildcache}" --ssh-port "${BUILDCACHE_SSH_PORT:-2222}"
        --https-port 443 --user "${BUILDCACHE_USER:-$(id -un)}" --listen 0.0.0.0)
    local name
    for name in buildcache ${BUILDCACHE_NAMES:-}; do args+=(--name "$name"); done
    cache init "${args[@]}" "$@"
}

action=${1:-serve}
case $action in
serve)
    init >/dev/null
    exec python3 -m flatcar_airflow.buildcache_server --state "$state" serve
    ;;
init)
    shift
    init "$@"
    ;;
*)
    exec python3 -m flatcar_airflow.buildcache_server --state "$state" "$@"
    ;;
esac
