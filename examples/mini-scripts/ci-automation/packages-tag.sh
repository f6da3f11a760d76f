#!/bin/bash
#
# Miniature Flatcar scripts repository (flatcar-airflow test fixture).
#
# >>> This file is supposed to be SOURCED from the repository ROOT. <<<
#
# packages_tag() should be called w/ the positional INPUT parameters below.

# Build tag automation stub.
#   This script will update the versionfile with the OS packages version to build,
#   and will add a version tag (see INPUT) to the scripts repo.
#
# PREREQUISITES:
#
#   1. SDK version is recorded in sdk_container/.repo/manifests/version.txt
#   2. SDK container is either
#       - available via ghcr.io/flatcar/flatcar-sdk-[ARCH]:[VERSION] (official SDK release)
#       OR
#       - available via build cache server "/containers/[VERSION]/flatcar-sdk-[ARCH]-[VERSION].tar.zst"
#         (dev SDK)
#
# INPUT:
#
#   1. Version of the TARGET OS image to build (string), with a channel prefix, e.g.
#       stable-4593.2.5 (a release), stable-4593.2.5-nightly-20260821-2100 (a maintenance
#       nightly: pushed to the flatcar-4593 branch too) or alpha-4790.0.0-my-fix (a development build).
#       A tag of this version will be created in the scripts repo and pushed upstream.
#
# OPTIONAL INPUT:
#
#   1. A file ../scripts.patch to apply with "git am -3" for the scripts repo.
#   2. AVOID_NIGHTLY_BUILD_SHORTCUTS. Environment variable. Tag and build a nightly even if
#       nothing changed since the last one.
#
# OUTPUT:
#
#   1. Updated scripts repository
#        - version tag
#        - sdk_container/.repo/manifests/version.txt denotes new FLATCAR OS version
#   2. "./skip-build" as flag file to signal that the build should stop (nothing changed since the
#        last nightly or release of this branch and its images exist).

function packages_tag() {
    # Run a subshell, so the traps, environment changes and global
    # variables are not spilled into the caller.
    (
        set -euo pipefail

        _packages_tag_impl "${@}"
    )
}
# --

function _packages_tag_impl() {
    local version=${1}

    source ci-automation/ci_automation_common.sh
    source ci-automation/gpg_setup.sh
    source sdk_lib/sdk_container_common.sh

    check_version_string "${version}"

    source sdk_container/.repo/manifests/version.txt
    local sdk_version=${FLATCAR_SDK_VERSION}

    mini_step_knobs packages_tag \
        "flatcar-packages-tag-$(vernum_to_docker_image_version "$(strip_version_prefix "${version}")")" ""

    if [[ -n ${CIA_DEBUGTESTRUN:-} ]]; then
        set -x
    fi

    # A maintenance nightly is pushed to its flatcar-MAJOR branch too, so it must be built from its tip.
    local target_branch=''
    local branch_prefix=${CIA_DEBUGFLATCARBRANCHPREFIX:-flatcar}
    local nightly=${CIA_DEBUGNIGHTLY:-nightly}
    local nightly_re='^(stable|alpha|beta|lts)-([0-9]+)(\.[0-9]+){2}-'"${nightly}"'-[0-9]{8}-[0-9]{4}$'
    local major=''
    local -a head_tags=()
    if [[ ${version} =~ ${nightly_re} ]]; then
        major=${BASH_REMATCH[2]}
        local branch_name="${branch_prefix}-${major}"
        local branch_hash
        branch_hash=$(git rev-parse "origin/${branch_name}")
        if [[ $(git rev-parse HEAD) != "${branch_hash}" ]]; then
            echo "We are doing a nightly build but we are not on top of the ${branch_name} branch. This is wrong and would result in the nightly tag not being a part of the branch." >&2
            exit 1
        fi
        target_branch=${branch_name}
        if bool_is_true "${AVOID_NIGHTLY_BUILD_SHORTCUTS}"; then
            echo "Continuing the build because AVOID_NIGHTLY_BUILD_SHORTCUTS is bool true (${AVOID_NIGHTLY_BUILD_SHORTCUTS})" >&2
        else
            git fetch --all --tags --force
            mapfile -t head_tags < <(git tag --points-at HEAD)
        fi
    fi

    # HEAD is this branch's last nightly or release, nothing changed since and its images exist:
    # tell the caller to stop (./skip-build) instead of tagging again.
    local earlier_tag='' tag
    if [[ -n ${major} ]]; then
        local earlier_re='^(stable|alpha|beta|lts)-'"${major}"'(\.[0-9]+){2}(-'"${nightly}"'-[0-9]{8}-[0-9]{4})?$'
        for tag in "${head_tags[@]}"; do
            if [[ ${tag} =~ ${earlier_re} ]]; then
                earlier_tag=${tag}
                break
            fi
        done
    fi
    if [[ -n ${earlier_tag} ]]; then
        local -i diff_rc=0
        git diff --exit-code --quiet "${earlier_tag}" || diff_rc=$?
        if [[ diff_rc -eq 0 ]]; then
            if check_bincache_images_existence \
                "https://${BUILDCACHE_SERVER}/images/amd64/${FLATCAR_VERSION}/flatcar_production_image.bin.bz2" \
                "https://${BUILDCACHE_SERVER}/images/arm64/${FLATCAR_VERSION}/flatcar_production_image.bin.bz2"; then
                touch ./skip-build
                echo "Creating ./skip-build flag file, indicating that the build must not to continue because no new tag got created as there are no changes since tag ${earlier_tag} and the Flatcar images exist" >&2
                return 0
            fi
            echo "No changes but continuing build because Flatcar images do not exist"
        elif [[ diff_rc -eq 1 ]]; then
            echo "HEAD is tagged with a nightly tag and yet there are differences? This is fishy and needs to be investigated. Maybe you forgot to commit your changes?" >&2
            exit 1
        else
            echo "Error: Unexpected git diff return code (${diff_rc})" >&2
            return 1
        fi
    fi
    if [[ -n ${CIA_DEBUGTESTRUN:-} ]]; then
        set +x
    fi

    # The OS build keeps the SDK version.txt records.
    create_versionfile "${sdk_version}" "${version}"
    if [[ -n ${CIA_DEBUGTESTRUN:-} ]]; then
        set -x
    fi
    update_and_push_version "${version}" "${target_branch}"
    if [[ -n ${CIA_DEBUGTESTRUN:-} ]]; then
        exit 0
    fi
    apply_local_patches
}
# --
