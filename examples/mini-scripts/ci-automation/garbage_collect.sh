#!/bin/bash
#
# Miniature Flatcar scripts repository (flatcar-airflow test fixture).
#
# >>> This file is supposed to be SOURCED from the repository ROOT. <<<
#
# garbage_collect() should be called after sourcing, w/ the OPTIONAL INPUT parameters below.

# Build cache garbage collector.
#   Removes the build cache artifacts and the scripts repository tags of development (non-official)
#   versions which BOTH exceed the number of builds to keep AND are older than the minimum age, and
#   every version directory of the build cache that no version tag names (an orphan).
#
# OPTIONAL INPUT:
#
#   1. Number of (newest) development versions to keep. Defaults to 50. Giving it without 2. makes
#       the minimum age 0 days.
#   2. Minimum age, in days, of a version tag to be purged. Defaults to 14.
#   3. PURGE_VERSIONS. Environment variable. Space-separated development version tags to purge instead
#       (1. and 2. are then ignored). Official releases are never purged: a tag without a build id
#       (stable-4593.2.5) or ending in -pro is dropped from the list with a message.
#   4. DRY_RUN. Environment variable. "y": only list what would be removed, remove nothing.
#
# OUTPUT:
#
#   For each purged version V (docker form DV; FLATCAR_VERSION of the tag's version.txt), removed from
#   the build cache with `ssh ... rm -rf`: sdk/*/V/, containers/DV/flatcar-{sdk,packages,images}-*,
#   boards/*/V/, images/*/V/, testing/V/, build-logs/V/; then containers/DV/ if empty (rmdir), then the
#   tag V, locally and on origin. Then the orphan directories of sdk/amd64, containers,
#   boards/{amd64,arm64}-usr, images/{amd64,arm64}, testing and build-logs (listed with `ssh ... ls -1`)
#   whose name (with '+' as '-') no tag contains; *-github-* containers are left alone.
#   A version whose tag is gone already (an interrupted earlier run) is skipped: the orphan sweep removes
#   what it left, so a second run finishes the first.

function garbage_collect() {
    # Run a subshell, so the traps, environment changes and global
    # variables are not spilled into the caller.
    (
        set -euo pipefail

        _garbage_collect_impl "${@}"
    )
}
# --

# The development version tags the collector considers (an official release has no build id).
_GC_DEV_RE='^(main|alpha|beta|stable|lts)-[0-9]+\.[0-9]+\.[0-9]+-.+$'

function _gc_is_dev_version() {
    [[ ${1} =~ ${_GC_DEV_RE} && ${1} != *-pro ]]
}
# --

# _gc_remote CMD...: runs CMD on the build cache with the write key (its words are not quoted: the
# build cache splits them on blanks and interprets nothing but '*').
function _gc_remote() {
    local sshcmd
    sshcmd=$(gen_sshcmd)
    # The ssh command line is split into words on purpose.
    # shellcheck disable=SC2086
    ${sshcmd} "${BUILDCACHE_USER}@${BUILDCACHE_SERVER}" "$*" </dev/null
}
# --

# Prints "<YYYY-MM-DD> <tag>" of every development version tag, newest first.
function _gc_detect_versions() {
    local date tag
    git tag -l --sort=-creatordate --format='%(creatordate:format:%Y-%m-%d) %(refname:strip=2)' |
        while read -r date tag; do
            if _gc_is_dev_version "${tag}"; then
                echo "${date} ${tag}"
            fi
        done
}
# --

function _garbage_collect_impl() {
    local keep=${1:-}
    local min_age_days=${2:-}
    local dry_run=${DRY_RUN:-}
    local purge_list=${PURGE_VERSIONS:-}

    if [[ -n ${keep} && -z ${min_age_days} ]]; then
        min_age_days=0
    fi
    : "${keep:=50}" "${min_age_days:=14}"
    if [[ ! ${keep} =~ ^[0-9]+$ || ! ${min_age_days} =~ ^[0-9]+$ ]]; then
        echo "ERROR: the number of versions to keep (${keep@Q}) and the minimum age in days (${min_age_days@Q}) must be numbers" >&2
        exit 1
    fi

    source ci-automation/ci_automation_common.sh

    local -a purge=()
    local version
    echo "######## Garbage collector starting ########"
    if [[ -z ${purge_list} ]]; then
        local min_age_date
        min_age_date=$(date -d "${min_age_days} days ago" +%Y-%m-%d)
        echo "Number of versions to keep: '${keep}'"
        echo "Keep newer than: '${min_age_date}' (overrides number of versions to keep)"
        local -i n=0
        local date
        echo "######## Full list of version(s) and their creation dates ########"
        while read -r date version; do
            [[ -n ${version} ]] || continue
            n+=1
            printf '%5d %s | %s\n' "${n}" "${date}" "${version}"
            if ((n <= keep)) || [[ ${date} > ${min_age_date} ]]; then
                continue
            fi
            purge+=("${version}")
        done < <(_gc_detect_versions)
    else
        for version in ${purge_list}; do
            if _gc_is_dev_version "${version}"; then
                purge+=("${version}")
            else
                echo "Ignoring '${version}': not a development version (official releases are never purged)"
            fi
        done
    fi

    echo
    echo "######## The following version(s) will be purged ########"
    if [[ ${dry_run} == y ]]; then
        echo "(NOTE this is just a dry run since DRY_RUN=y)"
    fi
    local -i i=0
    for version in "${purge[@]}"; do
        i+=1
        printf '%5d %s\n' "${i}" "${version}"
    done
    echo

    local p=${BUILDCACHE_PATH_PREFIX}
    for version in "${purge[@]}"; do
        echo "--------------------------------------------"
        echo "#### Processing version '${version}' ####"
        local versionfile
        if ! versionfile=$(git show "refs/tags/${version}:sdk_container/.repo/manifests/version.txt" 2>/dev/null); then
            echo "## No tag '${version}' (removed already?): skipping; the orphan sweep removes what is left ##"
            continue
        fi
        local vernum docker_vernum
        vernum=$(sed -n -e 's/^FLATCAR_VERSION=//p' <<<"${versionfile}" | tr -d "\"'")
        if [[ ! ${vernum} =~ ^[0-9]+\.[0-9]+\.[0-9]+([+-][A-Za-z0-9._-]+)?$ ]]; then
            echo "ERROR: the version.txt of tag '${version}' has no valid FLATCAR_VERSION (${vernum@Q})" >&2
            exit 1
        fi
        docker_vernum=$(vernum_to_docker_image_version "${vernum}")
        local -a paths=(
            "${p}/sdk/*/${vernum}/"
            "${p}/containers/${docker_vernum}/flatcar-sdk-*"
            "${p}/containers/${docker_vernum}/flatcar-packages-*"
            "${p}/boards/*/${vernum}/"
            "${p}/containers/${docker_vernum}/flatcar-images-*"
            "${p}/images/*/${vernum}/"
            "${p}/testing/${vernum}/"
            "${p}/build-logs/${vernum}/"
        )
        echo "## The following files will be removed ##"
        _gc_remote ls -la "${paths[@]}" "|| true"
        if [[ ${dry_run} != y ]]; then
            echo "+ rm -rf ${paths[*]}"
            _gc_remote rm -rf "${paths[@]}"
        else
            echo "## (DRY_RUN=y so not doing anything) ##"
        fi

        local container_dir="${p}/containers/${docker_vernum}/"
        echo "## The following directory will be removed if it is empty: '${container_dir}' ##"
        if [[ ${dry_run} != y ]]; then
            _gc_remote rmdir "${container_dir}" "|| true"
        else
            echo "## (DRY_RUN=y so not doing anything) ##"
        fi

        echo "## The following TAG will be deleted: '${version}' ##"
        if [[ ${dry_run} != y ]]; then
            git tag -d "${version}"
            git push --delete origin "${version}"
        else
            echo "## (DRY_RUN=y so not doing anything) ##"
        fi
    done

    echo
    echo "######## Checking for orphaned directories ########"
    local tags
    tags=$(git tag -l)
    local dir name
    for dir in sdk/amd64 containers boards/amd64-usr boards/arm64-usr images/amd64 images/arm64 testing build-logs; do
        echo "## Processing '${p}/${dir}' ##"
        local listing
        listing=$(_gc_remote ls -1 "${p}/${dir}" "|| true")
        for name in ${listing}; do
            if [[ ${dir} == containers && ${name//+/-} == *-github-* ]]; then
                echo "Ignoring GitHub CI SDK container '${p}/${dir}/${name}' (not this collector's)"
                continue
            fi
            if grep -qF -- "${name//+/-}" <<<"${tags}"; then
                continue
            fi
            echo "## No tag '${name//+/-}' for orphan directory '${p}/${dir}/${name}'; removing ##"
            _gc_remote ls -la "${p}/${dir}/${name}" "|| true"
            if [[ ${dry_run} != y ]]; then
                echo "+ rm -rf ${p}/${dir}/${name}"
                _gc_remote rm -rf "${p}/${dir}/${name}" "|| true"
            else
                echo "## (DRY_RUN=y so not doing anything) ##"
            fi
        done
    done

    echo
    echo "mini-scripts: no cloud, GitHub CI SDK or release artifact garbage collection in the miniature"
}
# --
