# Miniature Flatcar scripts repository (flatcar-airflow test fixture).
#
# CI automation common functions: version checks and tagging, build cache transfers, container
# images to and from the build cache, digests and signatures. Same names, arguments and effects as
# the Flatcar scripts repository's ci-automation/ci_automation_common.sh (this implementation is our
# own). Sourced from the repository root by every step script.

# shellcheck shell=bash

# shellcheck source=ci-automation/ci-config.env
source ci-automation/ci-config.env
# shellcheck source=ci-automation/mini_knobs.sh
source ci-automation/mini_knobs.sh

: "${docker:=docker}"
: "${TEST_WORK_DIR:=__TESTS__}"

# Options of every HTTPS read from the build cache (connection problems are retried, HTTP errors not).
# MINI_CURL_RETRY_MAX_TIME (a test knob, ci-automation/mini_knobs.sh) shortens the retries' 60 s.
CIA_CURL_OPTS=(--fail --silent --show-error --location --retry-delay 1 --retry 60 --retry-connrefused
    --retry-max-time "${MINI_CURL_RETRY_MAX_TIME:-60}" --connect-timeout 20)

# True for 1, true, t, yes, y (any case).
function bool_is_true() {
    case ${1,,} in
        1|true|t|yes|y) return 0 ;;
        *) return 1 ;;
    esac
}
# --

# check_version_string VERSION: exits the step unless VERSION is a tag-form version.
function check_version_string() {
    local version=${1}
    if [[ ! ${version} =~ ^(main|alpha|beta|stable|lts)-[0-9]+\.[0-9]+\.[0-9]+(-.+)?$ ]]; then
        echo "ERROR: invalid version '${version}', must start with 'main', 'alpha', 'beta', 'stable' or 'lts', followed by a dash and three dot-separated numbers, optionally followed by a dash and a non-empty build ID"
        exit 1
    fi
}
# --

# Appends a command to ./ci-cleanup.sh (created with a shebang when missing). CI runs that file
# after a step has finished or was aborted.
function ci_cleanup_add() {
    if [[ ! -e ./ci-cleanup.sh ]]; then
        printf '#!/bin/bash\n' >./ci-cleanup.sh
        chmod 0755 ./ci-cleanup.sh
    fi
    printf '%s\n' "$*" >>./ci-cleanup.sh
}
# --

# update_and_push_version VERSION [TARGET_BRANCH]
# Commits version.txt (an empty commit when unchanged) and tags it VERSION. If the tag exists already
# (after fetching the remote's tags) with exactly this tree, the existing tag is checked out instead;
# if it exists with another tree, this fails. A new tag is pushed, after HEAD was pushed to
# TARGET_BRANCH when one is given.
function update_and_push_version() {
    local version=${1}
    local target_branch=${2:-}

    if ! git config --get user.name >/dev/null 2>&1; then
        git config user.name "${CI_GIT_AUTHOR}"
    fi
    if ! git config --get user.email >/dev/null 2>&1; then
        git config user.email "${CI_GIT_EMAIL}"
    fi

    git add sdk_container/.repo/manifests/version.txt
    git commit --signoff --allow-empty -m "New version: ${version}"

    git fetch --all --tags --force
    local -i diff_rc=0
    git diff --quiet --exit-code "${version}" 2>/dev/null || diff_rc=$?
    # 0: the tag has our tree; 1: it has another tree; 127/128: there is no such tag.
    case ${diff_rc} in
        0)
            echo "Reusing existing tag" >&2
            git checkout --force "${version}"
            return 0
            ;;
        1)
            echo "Remote tag exists already and is not equal" >&2
            return 1
            ;;
        127|128) ;;
        *)
            echo "Error: Unexpected git diff return code (${diff_rc})" >&2
            return 1
            ;;
    esac

    local -a tag_args=()
    if [[ ${SIGN:-0} == 1 ]]; then
        tag_args=(--sign "--message=${version}")
    fi
    git tag --force "${tag_args[@]}" "${version}"

    if [[ -n ${target_branch} ]]; then
        git push origin "HEAD:${target_branch}"
    fi
    git push origin "${version}"
}
# --

# Applies ../scripts.patch (embargoed fixes) unless it is applied already.
function apply_local_patches() {
    local patch=../scripts.patch
    if [[ ! -f ${patch} ]]; then
        return 0
    fi
    local patch_id
    patch_id=$(git patch-id --stable <"${patch}" | cut -d' ' -f1 | head -n1)
    # (no grep -q: an early exit would fail the pipeline with SIGPIPE)
    if [[ -n ${patch_id} ]] &&
        git log -p -n 200 | git patch-id --stable | cut -d' ' -f1 | grep -x "${patch_id}" >/dev/null; then
        echo "Local patches already applied" >&2
        return 0
    fi
    echo "Applying local patches from ${patch}" >&2
    git am -3 "${patch}"
}
# --

# check_bincache_images_existence URL...: true when every URL answers a HEAD request.
# CIA_DEBUGIMAGESEXIST=yes|no short-circuits the check.
function check_bincache_images_existence() {
    case ${CIA_DEBUGIMAGESEXIST:-} in
        yes) return 0 ;;
        no) return 1 ;;
        '') curl --head --fail --fail-early --silent --show-error --location "$@" >/dev/null || return 1 ;;
        *)
            echo "Invalid CIA_DEBUGIMAGESEXIST value (${CIA_DEBUGIMAGESEXIST@Q})" >&2
            exit 1
            ;;
    esac
}
# --

# copy_from_buildcache PATH DIR: downloads https://${BUILDCACHE_SERVER}/PATH into DIR.
function copy_from_buildcache() {
    local what=${1}
    local where_to=${2}
    mkdir -p "${where_to}"
    curl "${CIA_CURL_OPTS[@]}" --remote-name --output-dir "${where_to}" "https://${BUILDCACHE_SERVER}/${what}"
}
# --

# The ssh command line used for build cache writes (port and key come from the user's ssh setup).
function gen_sshcmd() {
    echo "ssh -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o NumberOfPasswordPrompts=0"
}
# --

# copy_dir_from_buildcache PATH DIR: rsync over ssh from the build cache.
function copy_dir_from_buildcache() {
    local remote_path="${BUILDCACHE_PATH_PREFIX}/${1}"
    local local_path=${2}
    local sshcmd
    sshcmd=$(gen_sshcmd)
    mkdir -p "${local_path}"
    rsync --partial -a -e "${sshcmd}" "${BUILDCACHE_USER}@${BUILDCACHE_SERVER}:${remote_path}" "${local_path}"
}
# --

# copy_to_buildcache PATH FILE...: creates PATH on the build cache and rsyncs the files into it.
function copy_to_buildcache() {
    local remote_path="${BUILDCACHE_PATH_PREFIX}/${1}"
    shift
    local sshcmd
    sshcmd=$(gen_sshcmd)
    # The ssh command line is split into words on purpose.
    # shellcheck disable=SC2086
    ${sshcmd} "${BUILDCACHE_USER}@${BUILDCACHE_SERVER}" "mkdir -p ${remote_path}" </dev/null
    rsync --partial -a -e "${sshcmd}" "$@" "${BUILDCACHE_USER}@${BUILDCACHE_SERVER}:${remote_path}"
}
# --

# url_from_template TEMPLATE ARCH CHANNEL PROTO VERNUM
function url_from_template() {
    local url=${1}
    url=${url//@ARCH@/${2}}
    url=${url//@CHANNEL@/${3}}
    url=${url//@PROTO@/${4}}
    url=${url//@VERNUM@/${5}}
    echo "${url}"
}
# --

# Docker tags cannot hold '+' (same as in sdk_lib/sdk_container_common.sh).
function vernum_to_docker_image_version() {
    echo "${1//+/-}"
}
# --

# image_exists_locally NAME TAG
function image_exists_locally() {
    local image="${1}:${2}"
    local found
    found=$("${docker}" images "${image}" --no-trunc --format '{{.Repository}}:{{.Tag}}')
    [[ ${found} == "${image}" ]]
}
# --

# docker_image_fullname NAME TAG: prints NAME:TAG or ${CONTAINER_REGISTRY}/NAME:TAG, whichever exists.
function docker_image_fullname() {
    local image=${1}
    local version=${2}
    local candidate
    for candidate in "${image}" "${CONTAINER_REGISTRY}/${image}"; do
        if image_exists_locally "${candidate}" "${version}"; then
            echo "${candidate}:${version}"
            return 0
        fi
    done
    return 1
}
# --

# The image id without its "sha256:" prefix.
function docker_image_id() {
    local id
    id=$("${docker}" image inspect --format '{{.Id}}' "${1}")
    echo "${id#sha256:}"
}
# --

# docker_image_to_buildcache IMAGE TAG
# Saves IMAGE:TAG as $(basename IMAGE)-TAG.tar.zst plus an .id file (and digests, signatures) and
# uploads them to containers/TAG/.
function docker_image_to_buildcache() {
    local image=${1}
    local version=${2}
    local base
    base=$(basename "${image}")
    local tarball="${base}-${version}.tar.zst"
    local id_file="${base}-${version}.id"

    "${docker}" save "${image}:${version}" | zstd -T0 -o "${tarball}"
    chmod 0644 "${tarball}"
    docker_image_id "${image}:${version}" >"${id_file}"
    create_digests "${SIGNER:-}" "${tarball}" "${id_file}"
    sign_artifacts "${SIGNER:-}" "${tarball}"* "${id_file}"*
    copy_to_buildcache "containers/${version}" "${tarball}"* "${id_file}"*
}
# --

# docker_commit_to_buildcache CONTAINER NAME TAG
function docker_commit_to_buildcache() {
    local container=${1}
    local image_name=${2}
    local image_version=${3}
    "${docker}" commit "${container}" "${image_name}:${image_version}"
    docker_image_to_buildcache "${image_name}" "${image_version}"
}
# --

# docker_image_from_buildcache NAME TAG [zst|gz]
# Loads containers/TAG/NAME-TAG.tar.<compr> from the build cache, unless a local image NAME:TAG (or
# ${CONTAINER_REGISTRY}/NAME:TAG) has the id the build cache's .id file records.
function docker_image_from_buildcache() {
    local name=${1}
    local version=${2}
    local compr=${3:-zst}
    local tarball="${name}-${version}.tar.${compr}"
    local id_url="https://${BUILDCACHE_SERVER}/containers/${version}/${name}-${version}.id"

    local local_image=""
    if image_exists_locally "${name}" "${version}"; then
        local_image="${name}:${version}"
    elif image_exists_locally "${CONTAINER_REGISTRY}/${name}" "${version}"; then
        local_image="${CONTAINER_REGISTRY}/${name}:${version}"
    fi
    if [[ -n ${local_image} ]]; then
        local local_id remote_id
        local_id=$(docker_image_id "${local_image}")
        remote_id=$(curl "${CIA_CURL_OPTS[@]}" "${id_url}" || echo "not found")
        if [[ ${local_id} == "${remote_id}" ]]; then
            echo "Local image is up-to-date" >&2
            return 0
        fi
        echo "Local image outdated, downloading..." >&2
    fi

    # Every failure returns explicitly: callers use this in `||` lists, where `set -e` does not act.
    curl "${CIA_CURL_OPTS[@]}" --remote-name "https://${BUILDCACHE_SERVER}/containers/${version}/${tarball}" ||
        return 1
    # zstd reads gzip too
    if ! zstd -d -c "${tarball}" | "${docker}" load; then
        rm -f "${tarball}"
        return 1
    fi
    rm -f "${tarball}"
}
# --

# docker_image_from_registry_or_buildcache NAME TAG
function docker_image_from_registry_or_buildcache() {
    local image=${1}
    local version=${2}
    if timeout 120 "${docker}" pull "${CONTAINER_REGISTRY}/${image}:${version}"; then
        return 0
    fi
    echo "Container image not found in registry, downloading SDK tarball instead (this is normal for nightly builds)..." >&2
    docker_image_from_buildcache "${image}" "${version}" zst ||
        docker_image_from_buildcache "${image}" "${version}" gz
}
# --

# list_files RESULT_ARRAY EXCLUDED_EXTENSIONS FILE_OR_DIR...
# Regular files given or found in the directories given, except those whose extension is in the
# comma-separated EXCLUDED_EXTENSIONS.
function list_files() {
    local -n list_files_out=${1}
    local excluded=",${2},"
    shift 2
    list_files_out=()
    local entry file
    for entry in "$@"; do
        if [[ -d ${entry} ]]; then
            while IFS= read -r -d '' file; do
                [[ ${excluded} == *",${file##*.},"* ]] || list_files_out+=("${file}")
            done < <(find "${entry}" -type f -print0 | sort -z)
        elif [[ -f ${entry} ]]; then
            [[ ${excluded} == *",${entry##*.},"* ]] || list_files_out+=("${entry}")
        fi
    done
}
# --

# create_digests SIGNER FILE_OR_DIR...: writes FILE.DIGESTS (MD5, SHA1 and SHA512 sections) for each
# file that has none yet, and FILE.DIGESTS.asc when SIGNER is set.
function create_digests() {
    local signer=${1}
    shift
    local -a files=()
    list_files files 'asc,gpg,sig,DIGESTS' "$@"
    local file dir base
    for file in "${files[@]}"; do
        [[ -e ${file}.DIGESTS ]] && continue
        dir=$(dirname "${file}")
        base=$(basename "${file}")
        (
            cd "${dir}" || exit 1
            echo "# MD5 HASH"
            md5sum -- "${base}"
            echo "# SHA1 HASH"
            sha1sum -- "${base}"
            echo "# SHA512 HASH"
            sha512sum -- "${base}"
        ) >"${file}.DIGESTS"
        if [[ -n ${signer} && ! -e ${file}.DIGESTS.asc ]]; then
            gpg --batch --local-user "${signer}" --output "${file}.DIGESTS.asc" --clearsign "${file}.DIGESTS"
        fi
    done
}
# --

# sign_artifacts SIGNER FILE_OR_DIR...: detached FILE.sig signatures; nothing when SIGNER is empty.
function sign_artifacts() {
    local signer=${1}
    shift
    if [[ -z ${signer} ]]; then
        return 0
    fi
    local -a files=()
    list_files files 'asc,gpg,sig' "$@"
    local file
    for file in "${files[@]}"; do
        gpg --batch --local-user "${signer}" --output "${file}.sig" --detach-sign "${file}"
    done
}
# --

# Called by a vendor test script (its work dir is ${TEST_WORK_DIR}/<image>) to stop the re-runs.
function break_retest_cycle() {
    local work_dir
    work_dir=$(dirname "${PWD}")
    if [[ $(basename "${work_dir}") != "${TEST_WORK_DIR}" ]]; then
        echo "Not breaking retest cycle, expected test work dir to be a parent directory" >&2
        return 0
    fi
    touch "${work_dir}/break_retests"
}
# --

# True (once) when a vendor test script asked to stop the re-runs.
function retest_cycle_broken() {
    if [[ -f ${TEST_WORK_DIR}/break_retests ]]; then
        rm -f "${TEST_WORK_DIR}/break_retests"
        return 0
    fi
    return 1
}
# --

# Packs a log directory into NAME.tar.xz (NAME.tar.gz without xz) and uploads it to
# build-logs/VERSION/. Prints nothing and succeeds when the directory is empty.
function mini_upload_logs() {
    local logdir=${1}
    local version=${2}
    local name=${3}
    if [[ ! -d ${logdir} ]] || [[ -z $(ls -A "${logdir}") ]]; then
        return 0
    fi
    local tarball
    if command -v xz >/dev/null; then
        tarball="${name}.tar.xz"
        tar -C "${logdir}" -cJf "${tarball}" .
    else
        tarball="${name}.tar.gz"
        tar -C "${logdir}" -czf "${tarball}" .
    fi
    create_digests "${SIGNER:-}" "${tarball}"
    sign_artifacts "${SIGNER:-}" "${tarball}"*
    copy_to_buildcache "build-logs/${version}" "${tarball}"*
}
# --
