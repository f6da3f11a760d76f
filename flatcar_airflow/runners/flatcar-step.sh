#!/usr/bin/env bash
# flatcar-airflow step wrapper: runs ONE Flatcar ci-automation step on a build host.
#
# Usage: flatcar-step.sh JOB_DIR            run the step described by JOB_DIR/job.env
#        flatcar-step.sh --cleanup JOB_DIR  run the cleanup of a job whose wrapper was killed hard
#        flatcar-step.sh --cleanup-tree TREE TOKEN  the same for a pooled work tree, without the job
#                                           directory (the docker runner's fallback: it lived in the container)
#
# INPUTS (JOB_DIR, written by flatcar-airflow's runner; the directory is private to the job):
#   job.env      shell assignments, every value quoted by flatcar-airflow (one place, shlex.quote):
#                FLATCAR_JOB_ORIGIN, _REF, _MIRROR, _WORKSPACE, _SCRIPT, _FUNCTION, _ARGS (array),
#                _KEEP_WORKSPACE, _POOL, _SDK_ENV (names written to sdk_container/.env),
#                _CACHE_PATH_PREFIX, _CACHE_USER, _CACHE_SERVER, _CACHE_PORT,
#                plus exported step variables (BUILDCACHE_SERVER, CURL_CA_BUNDLE, SIGNER, ...)
#   ssh/id       optional private key for the build cache (loaded into a private ssh-agent)
#   secrets/signing.key  optional signing key, given to the step as SIGNING_KEY
#   secrets/sbsign.{key,crt}  optional Secure Boot key and certificate, given as SBSIGN_KEY, SBSIGN_CERT
#   ssl/ca.pem   optional CA certificates of the build cache's HTTPS server, given as CURL_CA_BUNDLE
# OUTPUTS (JOB_DIR):
#   pid          this wrapper's pid (also its process group: the runner starts it in a new session)
#   workspace    the work tree this attempt uses (with `owner`, its claim on a pooled tree): for --cleanup
#   result.json  {"rc": N, "cleanup_rc": N, "skip_build": bool, "signal": bool}
#   images.list  "<size> <name>" of the files the step left in the workspace's images/latest/
#   tap/         the merged TAP reports a test step left in the work tree's root (results-*.tap)
#
# What it does, in order: update the host's bare mirror of the scripts repo (incremental fetch, under a
# lock); make a work tree at the version tag whose origin is the real origin with current tracking refs:
# with FLATCAR_JOB_POOL set, a pooled tree of this host (one per scripts repo and concurrent slot, locked
# with flock while a step uses it) moved to the tag with a fresh .git, a forced checkout that writes only
# the files that differ and `git clean -ffdx`, then checked clean; otherwise (or when that fails) a fresh
# `git clone --shared` of the mirror (no objects are copied) and a full checkout; point the scripts at the build
# cache (ci-config.env hard-codes BUILDCACHE_PATH_PREFIX and BUILDCACHE_USER; the override is appended and
# hidden from git with --skip-worktree, so the scripts' own `git diff` checks still see the tag's tree);
# run `source <script>; <function> <args>` with standard input closed; then ALWAYS run ./ci-cleanup.sh
# (success, failure, or SIGTERM/SIGINT/SIGHUP, on which the whole process group is stopped first) and
# remove the work tree (a pooled one stays: only what the build added is removed, with `git clean -ffdx`).
set -uo pipefail
exec </dev/null

say() { printf '[flatcar-airflow] %s\n' "$*"; }

# seconds since the wrapper started, for the "work tree ready" line
started=${EPOCHREALTIME:-0}
elapsed() { awk -v a="$started" -v b="${EPOCHREALTIME:-0}" 'BEGIN { printf "%.2f", b - a }'; }

mode=run
case ${1:-} in
--cleanup) mode=cleanup && shift ;;
--cleanup-tree) mode=cleanup-tree && shift ;;
esac

ws=""
# The fd of our pooled work tree's lock, held while this wrapper runs (/dev/null until we hold one).
# Whatever the wrapper starts gets it closed ({slot_lock}>&-): a daemon the step leaves must not hold it.
exec {slot_lock}>/dev/null
pooled=0
rc=""
cleanup_rc=0

run_cleanup() {
    if [[ -f $ws/ci-cleanup.sh ]]; then
        say "running ./ci-cleanup.sh"
        (cd "$ws" && bash ./ci-cleanup.sh {slot_lock}>&-) || cleanup_rc=$?
        say "cleanup finished (exit ${cleanup_rc})"
    fi
}

# What the build added to a pooled tree goes (its outputs: the disk is freed now, not at the next step);
# a tree that cannot be cleaned is discarded.
scrub_pooled_tree() {
    if [[ -d $ws/.git ]] && git -C "$ws" clean -ffdxq 2>/dev/null; then
        return 0
    fi
    say "the pooled work tree $ws cannot be cleaned: discarding it"
    discard_tree
}

discard_tree() {
    local trash=$ws.discarded.$$
    mv "$ws" "$trash" 2>/dev/null && rm -rf "$trash"
    [[ ! -e $ws ]] || rm -rf "$ws"
}

# The cleanup of an attempt killed hard, in its pooled tree: only if the tree is still its (the token it
# wrote) and nobody holds the tree (the next user of a tree runs a pending cleanup itself, under the lock).
cleanup_pooled_tree() {
    local token=$1
    exec {slot_lock}>>"$ws.lock" || return 0
    flock -n "$slot_lock" || return 0
    [[ -n $token && -f $ws.owner && $(<"$ws.owner") == "$token" ]] || return 0
    run_cleanup
    scrub_pooled_tree
    rm -f "$ws.owner"
}

if [[ $mode == cleanup-tree ]]; then
    ws=${1:?usage: flatcar-step.sh --cleanup-tree TREE TOKEN}
    cleanup_pooled_tree "${2:-}"
    exit "$cleanup_rc"
fi

job=${1:?usage: flatcar-step.sh [--cleanup] JOB_DIR}
# shellcheck source=/dev/null
source "$job/job.env"

ws=$FLATCAR_JOB_WORKSPACE
agent_pid=""
signalled=false

if [[ $mode == cleanup ]]; then
    # The tree this attempt used: ours (job.env's) or a slot of the pool, nothing else a step could write.
    recorded=$(cat "$job/workspace" 2>/dev/null)
    pool_slot='^[0-9]+$'
    if [[ -n ${FLATCAR_JOB_POOL:-} && ${recorded%/*} == "$FLATCAR_JOB_POOL" && ${recorded##*/} =~ $pool_slot ]]; then
        ws=$recorded
        cleanup_pooled_tree "$(cat "$job/owner" 2>/dev/null)"
    else
        run_cleanup
        [[ ${FLATCAR_JOB_KEEP_WORKSPACE:-0} == 1 ]] || rm -rf "$ws"
    fi
    exit "$cleanup_rc"
fi

stop_earlier_attempts() {
    # Never run one job twice: an earlier attempt of this job (a sibling directory) that still runs is
    # stopped first; one whose wrapper died without a result gets its cleanup run now.
    local dir pid grace=${FLATCAR_JOB_STOP_GRACE:-120}
    for dir in "$job"/../[0-9]*/; do
        dir=${dir%/}
        [[ -d $dir && ! $dir -ef $job && -f $dir/flatcar-step.sh && $(basename "$dir") =~ ^[0-9]+$ ]] || continue
        if [[ -f $dir/pid && ! -f $dir/result.json ]]; then
            pid=$(<"$dir/pid")
            if [[ $pid =~ ^[0-9]+$ ]] && grep -qs flatcar-step.sh "/proc/$pid/cmdline"; then
                say "stopping an earlier attempt of this step ($(basename "$dir"), pid $pid)"
                kill -TERM -- "-$pid" 2>/dev/null
                for ((i = 0; i < grace * 5; i++)); do
                    [[ -f $dir/result.json ]] && break
                    grep -qs flatcar-step.sh "/proc/$pid/cmdline" || break
                    sleep 0.2
                done
                kill -KILL -- "-$pid" 2>/dev/null
            fi
            if [[ ! -f $dir/result.json && -f $dir/job.env ]]; then
                say "running the cleanup of the earlier attempt $(basename "$dir")"
                bash "$job/flatcar-step.sh" --cleanup "$dir"
            fi
        fi
        rm -rf "$dir"
    done
}

echo "$$" >"$job/pid"
stop_earlier_attempts

finish() {
    local status=$1
    trap '' TERM INT HUP
    [[ -n $rc ]] || rc=$status
    run_cleanup
    local skip=false
    [[ -e $ws/skip-build ]] && skip=true
    if [[ -d $ws/images/latest ]]; then
        (cd "$ws/images/latest" && find . -maxdepth 1 -type f -printf '%s %P\n' | sort -k2) >"$job/images.list"
    fi
    # test.sh leaves its merged reports (results-<vendor>[-detailed].tap) in the work tree's root.
    if compgen -G "$ws/results-*.tap" >/dev/null; then
        mkdir -p "$job/tap"
        cp "$ws"/results-*.tap "$job/tap/"
    fi
    [[ -n $agent_pid ]] && kill "$agent_pid" 2>/dev/null
    # gpg_setup.sh imports the signing key into ./.gnupg; its gpg-agent leaves the process group.
    if [[ -d $ws/.gnupg ]] && command -v gpgconf >/dev/null; then
        GNUPGHOME=$ws/.gnupg gpgconf --kill all 2>/dev/null
    fi
    if ((pooled)); then
        scrub_pooled_tree
        rm -f "$ws.owner"
    elif [[ ${FLATCAR_JOB_KEEP_WORKSPACE:-0} != 1 ]]; then
        rm -rf "$ws"
    else
        say "keeping the work tree $ws"
    fi
    rm -rf "$job/job.env" "$job/ssh/id" "$job/secrets"
    printf '{"rc": %d, "cleanup_rc": %d, "skip_build": %s, "signal": %s}\n' \
        "$rc" "$cleanup_rc" "$skip" "$signalled" >"$job/result.json.tmp"
    mv "$job/result.json.tmp" "$job/result.json"
    say "step finished (exit ${rc})"
    exit "$rc"
}

on_signal() {
    signalled=true
    trap '' TERM INT HUP
    say "stop requested: stopping the step's processes"
    kill -TERM -- "-$$" 2>/dev/null
    wait
    rc=143
    finish 143
}
trap on_signal TERM INT HUP

fail() {
    say "ERROR: $*"
    rc=1
    finish 1
}

# -- the host's mirror of the scripts repo -------------------------------------------------------------
mkdir -p "$(dirname "$FLATCAR_JOB_MIRROR")" || fail "cannot create $(dirname "$FLATCAR_JOB_MIRROR")"
exec {lock}>"$FLATCAR_JOB_MIRROR.lock"
flock "$lock" || fail "cannot lock $FLATCAR_JOB_MIRROR"
if [[ ! -d $FLATCAR_JOB_MIRROR ]]; then
    say "creating the mirror $FLATCAR_JOB_MIRROR (once per build host)"
    rm -rf "$FLATCAR_JOB_MIRROR.new"
    git clone --quiet --bare "$FLATCAR_JOB_ORIGIN" "$FLATCAR_JOB_MIRROR.new" || fail "cannot clone the scripts repository"
    git -C "$FLATCAR_JOB_MIRROR.new" config gc.auto 0
    mv "$FLATCAR_JOB_MIRROR.new" "$FLATCAR_JOB_MIRROR"
fi
git -C "$FLATCAR_JOB_MIRROR" remote set-url origin "$FLATCAR_JOB_ORIGIN"
git -C "$FLATCAR_JOB_MIRROR" fetch --quiet --prune --force origin \
    '+refs/heads/*:refs/heads/*' '+refs/tags/*:refs/tags/*' || fail "cannot update the mirror"
flock -u "$lock"

# -- the work tree at the tag --------------------------------------------------------------------------
# A fresh tree: a `git clone --shared` of the mirror (no objects copied) and a full checkout.
fresh_tree() {
    rm -rf "$ws"
    mkdir -p "$(dirname "$ws")"
    git clone --quiet --shared --no-checkout "$FLATCAR_JOB_MIRROR" "$ws" || fail "cannot create the work tree $ws"
    git -C "$ws" remote set-url origin "$FLATCAR_JOB_ORIGIN"
    git -C "$ws" rev-parse --verify --quiet "$FLATCAR_JOB_REF^{commit}" >/dev/null ||
        fail "the scripts repository has no tag or commit '$FLATCAR_JOB_REF'"
    git -C "$ws" checkout --quiet --detach "$FLATCAR_JOB_REF" || fail "cannot check out $FLATCAR_JOB_REF"
}

# The first free slot of this host's pool for the scripts repo: its lock is ours until the wrapper exits.
claim_pooled_tree() {
    local slot fd
    mkdir -p "$FLATCAR_JOB_POOL" || return 1
    for ((slot = 0; slot < ${FLATCAR_JOB_POOL_SLOTS:-32}; slot++)); do
        exec {fd}>>"$FLATCAR_JOB_POOL/$slot.lock" || return 1
        if flock -n "$fd"; then
            exec {slot_lock}>&-
            slot_lock=$fd
            ws=$FLATCAR_JOB_POOL/$slot
            return 0
        fi
        exec {fd}>&-
    done
    return 1
}

# Move the pooled tree to the tag, as a Jenkins workspace is: the repository state (.git: refs, config,
# stash, hooks, objects an earlier build made) is a fresh `clone --shared`; the earlier index is kept
# only for what it knows of the files on disk, so the forced checkout writes just the files that differ
# from the tag; `git clean -ffdx` removes untracked and ignored files. Returns 1 (the tree is then
# discarded) unless the result is provably a clean checkout of the tag.
reuse_pooled_tree() {
    local new=$ws.new path
    [[ -d $ws/.git && ! -L $ws/.git && -f $ws/.git/index ]] || return 1
    rm -rf "$new" "$ws".old-git.*
    git clone --quiet --shared --no-checkout "$FLATCAR_JOB_MIRROR" "$new" || return 1
    git -C "$new" remote set-url origin "$FLATCAR_JOB_ORIGIN" || return 1
    git -C "$new" rev-parse --verify --quiet "$FLATCAR_JOB_REF^{commit}" >/dev/null ||
        fail "the scripts repository has no tag or commit '$FLATCAR_JOB_REF'"
    mv "$ws/.git/index" "$new/.git/index" && mv "$ws/.git" "$ws.old-git.$$" && mv "$new/.git" "$ws/.git" ||
        return 1
    rmdir "$new"
    # The old repository state is trash: deleted while the step starts (a leftover goes next time).
    (rm -rf "$ws.old-git.$$" &) {slot_lock}>&- >/dev/null 2>&1
    # Index flags hide changes from git (skip-worktree: our own ci-config.env override): clear them.
    # (One flag per update-index call: a second one would replace the first.)
    if git -C "$ws" ls-files -v | grep -qv '^H '; then
        git -C "$ws" ls-files -v -z | { grep -zv '^H ' || true; } | cut -z -c3- |
            git -C "$ws" update-index --no-skip-worktree -z --stdin || return 1
        git -C "$ws" ls-files -v -z | { grep -zv '^H ' || true; } | cut -z -c3- |
            git -C "$ws" update-index --no-assume-unchanged -z --stdin || return 1
        ! git -C "$ws" ls-files -v | grep -qv '^H ' || return 1
    fi
    # --force: local changes go, untracked files in the way too (a directory in the way: clean, again).
    if ! git -C "$ws" checkout --quiet --force --detach "$FLATCAR_JOB_REF" 2>/dev/null; then
        git -C "$ws" clean -ffdxq && git -C "$ws" checkout --quiet --force --detach "$FLATCAR_JOB_REF" ||
            return 1
    fi
    # Untracked and ignored files, nested repositories: gone (git clean fails if it cannot remove one).
    git -C "$ws" clean -ffdxq || return 1
    # A submodule's directory: empty, as in a fresh checkout (the wrapper initialises no submodules;
    # git clean does not look into them).
    while IFS= read -r -d '' path; do
        path=${path#*$'\t'}
        if [[ -d $ws/$path && ! -L $ws/$path ]]; then
            find "$ws/$path" -mindepth 1 -delete || return 1
        else
            rm -rf "${ws:?}/$path" && mkdir "$ws/$path" || return 1
        fi
    done < <(git -C "$ws" ls-files --stage -z | grep -z '^160000 ' || true)
    # The tracked files are the tag's (the forced checkout compared each with the index and wrote what
    # differed, or failed), HEAD is the tag.
    [[ $(git -C "$ws" rev-parse HEAD) == $(git -C "$ws" rev-parse "$FLATCAR_JOB_REF^{commit}") ]] || return 1
}

if [[ -n ${FLATCAR_JOB_POOL:-} && ${FLATCAR_JOB_KEEP_WORKSPACE:-0} != 1 ]] && claim_pooled_tree; then
    pooled=1
    printf '%s\n' "$ws" >"$job/workspace"
    if [[ -f $ws.owner ]]; then
        say "the last step in the pooled work tree $ws ended without its cleanup (killed hard): running it"
        run_cleanup
        cleanup_rc=0  # that step's, not this one's
    fi
    token=$(od -An -N8 -tx8 /dev/urandom | tr -d ' \n')
    printf '%s\n' "$token" >"$job/owner"
    printf '%s\n' "$token" >"$ws.owner"
    if [[ -d $ws ]] && reuse_pooled_tree; then
        say "pooled work tree $ws moved to $FLATCAR_JOB_REF (only the files that differ were written)"
    else
        [[ -d $ws ]] && say "the pooled work tree $ws is not reusable: making it afresh"
        discard_tree
        fresh_tree
    fi
else
    [[ -n ${FLATCAR_JOB_POOL:-} && ${FLATCAR_JOB_KEEP_WORKSPACE:-0} != 1 ]] &&
        say "every pooled work tree of this host is in use: a fresh work tree for this step"
    printf '%s\n' "$ws" >"$job/workspace"
    fresh_tree
fi
say "work tree $ws at $FLATCAR_JOB_REF ($(git -C "$ws" rev-parse --short HEAD)), ready after $(elapsed) s"
if [[ -n ${FLATCAR_JOB_PIN_ORIGIN_BRANCH:-} ]]; then
    git check-ref-format --branch "$FLATCAR_JOB_PIN_ORIGIN_BRANCH" >/dev/null 2>&1 ||
        fail "the branch to pin is not a branch name"
    # A backfilled nightly's tag is not on the branch head, and the scripts refuse a nightly that is not
    # (HEAD must equal origin/<branch>). In this work tree only, origin/<branch> points at the tag: the
    # scripts then take their "Reusing existing tag" path, which pushes nothing.
    git -C "$ws" update-ref "refs/remotes/origin/$FLATCAR_JOB_PIN_ORIGIN_BRANCH" HEAD ||
        fail "cannot point origin/$FLATCAR_JOB_PIN_ORIGIN_BRANCH at the tag"
    say "backfill: origin/$FLATCAR_JOB_PIN_ORIGIN_BRANCH points at the tag in this work tree (nothing is pushed)"
fi

# -- the build cache -----------------------------------------------------------------------------------
config=$ws/ci-automation/ci-config.env
if [[ -f $config && -n ${FLATCAR_JOB_CACHE_PATH_PREFIX:-} ]]; then
    {
        printf '\n# flatcar-airflow: build cache of this deployment (hidden from git by --skip-worktree)\n'
        printf 'BUILDCACHE_PATH_PREFIX=%q\n' "$FLATCAR_JOB_CACHE_PATH_PREFIX"
        printf 'BUILDCACHE_USER=%q\n' "$FLATCAR_JOB_CACHE_USER"
    } >>"$config"
    git -C "$ws" update-index --skip-worktree ci-automation/ci-config.env
fi
cache_key=""
if [[ -f $job/ssh/id ]]; then
    cache_key=$job/ssh/id
elif [[ -n ${FLATCAR_JOB_CACHE_KEY_FILE:-} ]]; then
    cache_key=$FLATCAR_JOB_CACHE_KEY_FILE
fi
if [[ -n $cache_key ]]; then
    eval "$(ssh-agent -s {slot_lock}>&-)" >/dev/null || fail "cannot start ssh-agent"
    agent_pid=$SSH_AGENT_PID
    ssh-add -q "$cache_key" 2>/dev/null || fail "cannot load the build cache key"
fi
if [[ -f $job/ssl/ca.pem ]]; then
    export CURL_CA_BUNDLE=$job/ssl/ca.pem
fi
if [[ -f $job/secrets/signing.key ]]; then
    export SIGNING_KEY=$job/secrets/signing.key
fi
# The Secure Boot key and certificate (sbsign_image), as the files the SDK reads.
if [[ -f $job/secrets/sbsign.key ]]; then
    export SBSIGN_KEY=$job/secrets/sbsign.key SBSIGN_CERT=$job/secrets/sbsign.crt
fi
# Variables the step's containers read from sdk_container/.env (the release's cloud credentials): the
# file is private to the work tree, which is removed after the step.
if [[ -n ${FLATCAR_JOB_SDK_ENV[*]:-} ]]; then
    (
        umask 077
        for name in "${FLATCAR_JOB_SDK_ENV[@]}"; do
            printf 'export %s=%q\n' "$name" "${!name-}"
        done >"$ws/sdk_container/.env"
    ) || fail "cannot write sdk_container/.env"
fi
if [[ -n ${FLATCAR_JOB_CACHE_PORT:-} ]]; then
    # ssh_config is line-based: a newline or a space in a value would add options (a ProxyCommand).
    # flatcar-airflow checks these values before it writes job.env; check again before writing the file.
    [[ $FLATCAR_JOB_CACHE_SERVER =~ ^[A-Za-z0-9][A-Za-z0-9.:-]*$ ]] ||
        fail "the build cache server name is not a host name or address"
    [[ $FLATCAR_JOB_CACHE_PORT =~ ^[1-9][0-9]{0,4}$ ]] || fail "the build cache port is not a number"
    [[ $FLATCAR_JOB_CACHE_USER =~ ^[A-Za-z_][A-Za-z0-9._-]*$ ]] || fail "the build cache user is not a user name"
    mkdir -p "$job/bin"
    mkdir -p -m 0700 "$job/ssh"
    {
        printf 'Host %s\n    Port %s\n    User %s\n' "$FLATCAR_JOB_CACHE_SERVER" "$FLATCAR_JOB_CACHE_PORT" \
            "$FLATCAR_JOB_CACHE_USER"
        printf '    ServerAliveInterval 30\n'
        printf 'Host *\n'
        [[ -f /etc/ssh/ssh_config ]] && printf '    Include /etc/ssh/ssh_config\n'
    } >"$job/ssh/config"
    real_ssh=$(command -v ssh) || fail "ssh is not installed on the build host"
    printf '#!/bin/sh\nexec %q -F %q "$@"\n' "$real_ssh" "$job/ssh/config" >"$job/bin/ssh"
    chmod 0755 "$job/bin/ssh"
    export PATH="$job/bin:$PATH"
fi

# -- the step ------------------------------------------------------------------------------------------
cd "$ws" || fail "cannot enter $ws"
say "running: source $FLATCAR_JOB_SCRIPT; $FLATCAR_JOB_FUNCTION ${FLATCAR_JOB_ARGS[*]}"
bash -c 'set -o pipefail; source "$1" || exit 1; shift; "$@"' flatcar-step \
    "$FLATCAR_JOB_SCRIPT" "$FLATCAR_JOB_FUNCTION" "${FLATCAR_JOB_ARGS[@]}" {slot_lock}>&- &
step=$!
while true; do
    wait "$step"
    status=$?
    kill -0 "$step" 2>/dev/null || break
done
rc=$status
finish "$rc"
