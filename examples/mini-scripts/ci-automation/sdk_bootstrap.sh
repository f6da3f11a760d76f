#!/bin/bash
#
# Miniature Flatcar scripts repository (flatcar-airflow test fixture).
#
# >>> This file is supposed to be SOURCED from the repository ROOT. <<<
#
# sdk_bootstrap() should be called w/ the positional INPUT parameters below.

# Bootstrap SDK build automation stub.
#   This script will use a seed SDK container to bootstrap a new SDK tarball.
#
# PREREQUISITES:
#
#   1. The seed SDK container ghcr.io/flatcar/flatcar-sdk-all:[SEED DOCKER VERSION] is present
#      locally (the miniature has no registry to pull it from).
#
# INPUT:
#
#   1. Version of the SEED SDK to use (string), e.g. 4798.0.0+nightly-20260820-2100.
#
#   2. Version of the TARGET SDK to build (string), with a channel prefix, e.g.
#       main-4799.0.0-nightly-20260821-2100 (a main nightly: pushed to the main branch too) or
#       main-4799.0.1-my-feature (a development build: a free-standing tag).
#       A tagged commit with the new version.txt is created in the scripts repo and pushed upstream.
#
# OPTIONAL INPUT:
#
#   3. ARCH. Environment variable. Target architecture for the SDK to run on.
#       Either "amd64" or "arm64"; defaults to "amd64" if not set.
#
#   4. SIGNER. Environment variable. Key id to sign the artifacts with (see gpg_setup.sh);
#       nothing is signed when it is empty or SIGNING_KEY is missing.
#
#   5. SIGNING_KEY. Environment variable. File with the secret key of SIGNER.
#
#   6. A file ../scripts.patch to apply with "git am -3" for the scripts repo.
#
#   7. AVOID_NIGHTLY_BUILD_SHORTCUTS. Environment variable. Build the SDK even if nothing
#       changed since the last nightly build.
#
# OUTPUT:
#
#   1. SDK tarball of the new SDK, pushed to buildcache:
#        sdk/[ARCH]/[SDK VERSION]/flatcar-sdk-[ARCH]-[SDK VERSION].tar.bz2
#   2. Updated scripts repository
#        - version tag
#        - sdk_container/.repo/manifests/version.txt denotes new SDK version
#   3. "./ci-cleanup.sh" with commands to clean up temporary build resources,
#        to be run after this step finishes / when this step is aborted.
#   4. If signer key was passed, signatures of artifacts from point 1, pushed along to buildcache.
#   5. DIGESTS of the artifacts from point 1, pushed to buildcache.
#   6. Logs: build-logs/[SDK VERSION]/sdk-bootstrap-logs-[ARCH]-[DATE].tar.xz on buildcache.

function sdk_bootstrap() {
    # Run a subshell, so the traps, environment changes and global
    # variables are not spilled into the caller.
    (
        set -euo pipefail

        _sdk_bootstrap_impl "${@}"
    )
}
# --

function _sdk_bootstrap_impl() {
    local seed_version=${1}
    local version=${2}
    : "${ARCH:=amd64}"

    source ci-automation/ci_automation_common.sh
    source ci-automation/gpg_setup.sh
    source sdk_lib/sdk_container_common.sh

    check_version_string "${version}"

    local vernum=${version#*-}
    local docker_vernum seed_docker_vernum
    docker_vernum=$(vernum_to_docker_image_version "$(strip_version_prefix "${version}")")
    seed_docker_vernum=$(vernum_to_docker_image_version "$(strip_version_prefix "${seed_version}")")
    mini_step_knobs sdk_bootstrap "flatcar-sdk-all-${seed_docker_vernum}_os-${docker_vernum}" \
        "${CONTAINER_REGISTRY}/flatcar-sdk-all:${seed_docker_vernum}"

    if [[ -n ${CIA_DEBUGTESTRUN:-} ]]; then
        set -x
    fi

    # A main nightly is pushed to the main branch as well, so it must be built from its tip.
    local target_branch=''
    local main_branch=${CIA_DEBUGMAINBRANCH:-main}
    local nightly=${CIA_DEBUGNIGHTLY:-nightly}
    local nightly_re='^main-[0-9]+(\.[0-9]+){2}-'"${nightly}"'-[0-9]{8}-[0-9]{4}(-INTERMEDIATE)?$'
    local -a head_tags=()
    if [[ ${version} =~ ${nightly_re} ]]; then
        local main_hash
        main_hash=$(git rev-parse "origin/${main_branch}")
        if [[ $(git rev-parse HEAD) != "${main_hash}" ]]; then
            echo "We are doing a nightly build but we are not on top of the ${main_branch} branch. This is wrong and would result in the nightly tag not being a part of the branch." >&2
            exit 1
        fi
        target_branch=${main_branch}
        if bool_is_true "${AVOID_NIGHTLY_BUILD_SHORTCUTS}"; then
            echo "Continuing the build because AVOID_NIGHTLY_BUILD_SHORTCUTS is bool true (${AVOID_NIGHTLY_BUILD_SHORTCUTS})" >&2
        else
            git fetch --all --tags --force
            mapfile -t head_tags < <(git tag --points-at HEAD)
        fi
    fi

    # Nothing changed since the last (final) nightly and its artifacts exist: stop here.
    local final_re='^main-[0-9]+(\.[0-9]+){2}-'"${nightly}"'-[0-9]{8}-[0-9]{4}$'
    local tag nightly_tag=''
    for tag in "${head_tags[@]}"; do
        if [[ ${tag} =~ ${final_re} ]]; then
            nightly_tag=${tag}
            break
        fi
    done
    if [[ -n ${nightly_tag} ]]; then
        local -i diff_rc=0
        git diff --exit-code --quiet "${nightly_tag}" || diff_rc=$?
        if [[ diff_rc -eq 0 ]]; then
            local head_sdk head_os head_sdk_docker
            head_sdk=$(get_sdk_version_from_versionfile)
            head_os=$(get_version_from_versionfile)
            head_sdk_docker=$(vernum_to_docker_image_version "${head_sdk}")
            if check_bincache_images_existence \
                "https://${BUILDCACHE_SERVER}/containers/${head_sdk_docker}/flatcar-sdk-all-${head_sdk_docker}.tar.zst" \
                "https://${BUILDCACHE_SERVER}/images/amd64/${head_os}/flatcar_production_image.bin.bz2" \
                "https://${BUILDCACHE_SERVER}/images/arm64/${head_os}/flatcar_production_image.bin.bz2"; then
                echo "Stopping build because there are no changes since tag ${nightly_tag}, the SDK container tar ball and the Flatcar images exist" >&2
                return 0
            fi
            echo "No changes but continuing build because SDK container tar ball and/or the Flatcar images do not exist" >&2
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

    # The new SDK's version is the OS version too.
    create_versionfile "${vernum}"
    if [[ -n ${CIA_DEBUGTESTRUN:-} ]]; then
        set -x
    fi
    update_and_push_version "${version}" "${target_branch}"
    if [[ -n ${CIA_DEBUGTESTRUN:-} ]]; then
        exit 0
    fi
    apply_local_patches

    local failed=''
    local logdir='__build__/sdk-bootstrap-logs-to-upload/'
    mkdir -p "${logdir}"
    ./bootstrap_sdk_container -l "${logdir}" -x ./ci-cleanup.sh "${seed_version}" "${vernum}" || failed=x

    source sdk_container/.repo/manifests/version.txt
    local dest_tarball="flatcar-sdk-${ARCH}-${FLATCAR_SDK_VERSION}.tar.bz2"
    local logs_name
    logs_name="sdk-bootstrap-logs-${ARCH}-$(date --utc '+%F-%H%M-%S')"

    if [[ -z ${failed} ]]; then
        (
            cd __build__/images/catalyst/builds/flatcar-sdk
            create_digests "${SIGNER}" "${dest_tarball}"
            sign_artifacts "${SIGNER}" "${dest_tarball}"*
            copy_to_buildcache "sdk/${ARCH}/${FLATCAR_SDK_VERSION}" "${dest_tarball}"*
        )
    fi
    mini_upload_logs "${logdir}" "${FLATCAR_SDK_VERSION}" "${logs_name}"
    if [[ -n ${failed} ]]; then
        echo "SDK bootstrap of ${version} from seed ${seed_version} failed" >&2
        exit 1
    fi
}
# --
