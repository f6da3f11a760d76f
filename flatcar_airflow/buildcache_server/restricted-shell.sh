#!/bin/bash
# flatcar-airflow build cache: the forced command of every write key (authorized_keys
# `restrict,command="restricted-shell.sh CACHE_DIR"`). A write key can do nothing but what the scripts'
# copy_to_buildcache / copy_dir_from_buildcache and the garbage collector (garbage_collect.sh) do.
#
# INPUTS:  $1                     the cache directory (BUILDCACHE_PATH_PREFIX, served over HTTPS)
#          SSH_ORIGINAL_COMMAND   what the client asked sshd to run
# OUTPUTS: allowed: `rsync --server ...` through rrsync -absolute -no-del -no-lock (paths under CACHE_DIR,
#          no deletions), `mkdir -p PATH...` (absolute paths under CACHE_DIR, no options); for the garbage
#          collector `ls -la PATH...`, `ls -1 PATH...`, `rm -rf PATH...` and `rmdir PATH...`, each optionally
#          followed by ` || true` (as garbage_collect.sh sends them): paths under CACHE_DIR, `*` globs
#          expanded here (never by a shell), and rm/rmdir only of version directories (and what is in
#          them) of the version areas: sdk/*/V, containers/V, boards/*/V, images/*/V, testing/V,
#          build-logs/V; a symlink is removed, never followed. Anything else, an interactive shell
#          included, is refused with exit status 1 and a message on stderr.
set -euo pipefail
umask 022

refuse() {
    printf 'flatcar-airflow build cache: refused %s: this key may only rsync, mkdir -p, ls and remove version directories under %s\n' \
        "$1" "$prefix" >&2
    exit 1
}

# Where the garbage collector may remove entries: the scripts' version areas (never the builds index),
# with the depth of their version directories (sdk/<arch>/<V>, containers/<V>, boards/<board>/<V>, ...).
declare -A gc_depth=([sdk]=2 [containers]=1 [boards]=2 [images]=2 [testing]=1 [build-logs]=1)

# gc_command COMMAND: ls/rm/rmdir of cache paths for garbage_collect.sh (see OUTPUTS above).
gc_command() {
    local cmd=$1 tolerant=0
    if [[ $cmd == *" || true" ]]; then
        tolerant=1
        cmd=${cmd% || true}
    fi
    local -a verb
    case $cmd in
    "ls -la "*) verb=(ls -la) ;;
    "ls -1 "*) verb=(ls -1) ;;
    "rm -rf "*) verb=(rm -rf) ;;
    "rmdir "*) verb=(rmdir) ;;
    esac
    local -a words=() targets=()
    read -r -a words <<<"${cmd#"${verb[*]} "}"
    ((${#words[@]})) || refuse "${verb[*]} without a path"
    local word path parent rel area depth
    shopt -s nullglob
    for word in "${words[@]}"; do
        [[ $word =~ ^/[A-Za-z0-9._+@=,/*-]*$ ]] || refuse "the path '${word:0:200}'"
        [[ /$word/ != *"/../"* && /$word/ != *"/./"* ]] || refuse "the path '${word:0:200}' (no . or ..)"
        [[ ${verb[0]} != rmdir || $word != *"*"* ]] || refuse "a pattern for rmdir"
        local -a matches=()
        if [[ $word == *"*"* ]]; then
            # Globbing only: every other character that a shell would interpret is refused above.
            matches=($word)
        elif [[ -e $word || -L $word ]]; then
            matches=("$word")
        elif [[ ${verb[0]} == ls ]]; then
            matches=("$word") # ls says that it does not exist
        fi
        for path in "${matches[@]}"; do
            while [[ $path == */ && $path != / ]]; do path=${path%/}; done
            # The entry itself is not followed (a symlink is removed, never its target); its directory is.
            parent=$(realpath -m -- "$(dirname -- "$path")")
            [[ $parent == "$prefix" || $parent == "$prefix"/* ]] ||
                refuse "the path '${word:0:200}' (outside the cache)"
            if [[ ${verb[0]} == rm || ${verb[0]} == rmdir ]]; then
                rel=${parent#"$prefix"}/$(basename -- "$path")
                rel=${rel#/}
                area=${rel%%/*}
                depth=$(tr -cd / <<<"$rel" | wc -c)
                [[ -n ${gc_depth[$area]:-} ]] && ((depth >= gc_depth[$area])) ||
                    refuse "removing '${word:0:200}' (only version directories of ${!gc_depth[*]}, and what is in them)"
            fi
            targets+=("$parent/$(basename -- "$path")")
        done
    done
    shopt -u nullglob
    local -i rc=0
    if ((${#targets[@]})); then
        "${verb[@]}" -- "${targets[@]}" || rc=$?
    elif [[ ${verb[0]} == ls ]]; then
        rc=2
    fi
    ((tolerant)) && exit 0
    exit "$rc"
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
"ls -la "* | "ls -1 "* | "rm -rf "* | "rmdir "*)
    gc_command "$command"
    ;;
*)
    refuse "'${command:0:200}'"
    ;;
esac
