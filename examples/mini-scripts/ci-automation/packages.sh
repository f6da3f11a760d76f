#!/bin/bash
#
# Miniature Flatcar scripts repository (flatcar-airflow test fixture).
#
# >>> This file is supposed to be SOURCED from the repository ROOT. <<<
#
# packages_build() should be called w/ the positional INPUT parameters below.

# OS image binary packages build automation stub.
#   This script will use an SDK container to build packages for an OS image.
#
# PREREQUISITES:
#
#   1. SDK version and OS image version are recorded in sdk_container/.repo/manifests/version.txt
#   2. Scripts repo version tag of OS image version to be built is available and checked out.
#   3. SDK container is either
#       - available via ghcr.io/flatcar/flatcar-sdk-[ARCH]:[VERSION] (official SDK release)
#       OR
#       - available via build cache server "/containers/[VERSION]/flatcar-sdk-[ARCH]-[VERSION].tar.zst"
#         (dev SDK)
#
# INPUT:
#
#   1. Architecture (ARCH) of the TARGET OS image ("arm64", "amd64").
#
# OPTIONAL INPUT:
#
#   2. SIGNER, SIGNING_KEY. Environment variables, see sdk_bootstrap.sh.
#   3. A file ../scripts.patch to apply with "git am -3" for the scripts repo.
#
# OUTPUT:
#
#   1. Container image flatcar-packages-[ARCH]:[DOCKER VERSION] (local) with the binary packages,
#       pushed to buildcache as containers/[DOCKER VERSION]/flatcar-packages-[ARCH]-[DOCKER VERSION].tar.zst
#       (+ .id).
#   2. "./ci-cleanup.sh" with commands to clean up temporary build resources,
#        to be run after this step finishes / when this step is aborted.
#   3. If signer key was passed, signatures of artifacts from point 1, pushed along to buildcache.
#   4. DIGESTS of the artifacts from point 1, pushed to buildcache.
#   5. Logs: build-logs/[SDK VERSION]/packages-[ARCH]-logs-[DATE].tar.xz on buildcache.

function packages_build() {
    # Run a subshell, so the traps, environment changes and global
    # variables are not spilled into the caller.
    (
        set -euo pipefail

        _packages_build_impl "${@}"
    )
}
# --

function _packages_build_impl() {
    local arch=${1}

    source ci-automation/ci_automation_common.sh
    source ci-automation/gpg_setup.sh
    source sdk_lib/sdk_container_common.sh

    source sdk_container/.repo/manifests/version.txt
    local vernum=${FLATCAR_VERSION}
    local docker_vernum docker_sdk_vernum
    docker_vernum=$(vernum_to_docker_image_version "${vernum}")
    docker_sdk_vernum=$(vernum_to_docker_image_version "${FLATCAR_SDK_VERSION}")

    docker_image_from_registry_or_buildcache "flatcar-sdk-${arch}" "${docker_sdk_vernum}"
    local sdk_image
    sdk_image=$(docker_image_fullname "flatcar-sdk-${arch}" "${docker_sdk_vernum}")

    local packages_container="flatcar-packages-${arch}-${docker_vernum}"
    mini_step_knobs packages_build "${packages_container}" "${sdk_image}" "${arch}"

    apply_local_patches

    local failed=''
    ./run_sdk_container -x ./ci-cleanup.sh -n "${packages_container}" -v "${vernum}" -C "${sdk_image}" \
        ./build_packages --board="${arch}-usr" || failed=x

    # Logs of the package builds, best-effort
    local logdir='__build__/packages-logs-to-upload'
    mkdir -p "${logdir}"
    ./run_sdk_container -n "${packages_container}" -v "${vernum}" -C "${sdk_image}" \
        sh -c "cp -r '/build/${arch}-usr/var/log/portage' '${logdir}/' 2>/dev/null || true" || true

    if [[ -z ${failed} ]]; then
        docker_commit_to_buildcache "${packages_container}" "flatcar-packages-${arch}" "${docker_vernum}"
    fi
    mini_upload_logs "${logdir}" "${FLATCAR_SDK_VERSION}" \
        "packages-${arch}-logs-$(date --utc '+%F-%H%M-%S')"
    if [[ -n ${failed} ]]; then
        echo "Building the packages of ${vernum} (${arch}) failed" >&2
        exit 1
    fi
}
# --
