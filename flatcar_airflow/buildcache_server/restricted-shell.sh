#!/bin/bash
# flatcar-airflow build cache: the forced command of every write key (authorized_keys
# `restrict,command="restricted-shell.sh CACHE_DIR"`). A write key can do nothing but what the scripts'
# copy_to_buildcache / copy_dir_from_buildcache do.
#
# INPUTS:  $1                     the cache directory (BUILDCACHE_PATH_PREFIX, served over HTTPS)
#          SSH_ORIGINAL_COMMAND   what the client asked sshd to run
# OUTPUTS: allowed: `rsync --server ...` through rrsync -absolute -no-del -no-lock (paths under CACHE_DIR,
#          no deletions), `mkdir -p PATH...` (absolute paths under CACHE_DIR, no options); anything else,
#          an interactive shell included, is refused with exit status 1 and a message on stderr.
set -euo pipefail
umask 022

refuse() {
    printf 'flatcar-airflow build cache: refused %s: this key may only rsync and mkdir -p under %s\n' \
        "$1" "$prefix" >&2
    exit 1
}

prefix=$(realpath -e -- "${1:?usage: restricted-shell.sh CACHE_DIR}")
command=${SSH_ORIGINAL_COMMAND-}

case $command in
"")
    refuse "an interactive shell"
    ;;
"rsync --server "*)
    # rrsync reads SSH_ORIGINAL_COMMAND itself and checks every option and path again. -no-lock: the
    # steps of several arches write at once (rrsync's lock would refuse all but one).
    exec rrsync -absolute -no-del -no-lock "$prefix"
    ;;
"mkdir -p "*)
    # Split on blanks only: no quotes, globs or expansions are interpreted.
    read -r -a paths <<<"${command#mkdir -p }"
    ((${#paths[@]})) || refuse "mkdir -p without a path"
    for path in "${paths[@]}"; do
        [[ $path =~ ^/[A-Za-z0-9._+@=,/-]*$ ]] || refuse "the path '$path'"
        resolved=$(realpath -m -- "$path")
        [[ $resolved == "$prefix" || $resolved == "$prefix"/* ]] || refuse "the path '$path' (outside the cache)"
    done
    exec mkdir -p -- "${paths[@]}"
    ;;
*)
    refuse "'${command:0:200}'"
    ;;
esac
