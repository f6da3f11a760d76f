#!/bin/bash
#
# Miniature Flatcar scripts repository (flatcar-airflow test fixture).
#
# >>> This file is supposed to be SOURCED from the repository ROOT. <<<
#
# sdk_container_build() should be called w/o parameters.

# SDK container builder automation stub.
#   This script will build the SDK container images from an SDK tarball.
#   The SDK tarball and the scripts repo (version.txt) must have the same version.
#
# PREREQUISITES:
#
#   1. SDK version is recorded in sdk_container/.repo/manifests/version.txt and a matching
#       SDK tarball is available on BUILDCACHE/sdk/[ARCH]/[VERSION]/flatcar-sdk-[ARCH]-[VERSION].tar.bz2
#
# OPTIONAL INPUT:
#
#   2. ARCH. Environment variable. Architecture of the SDK tarball ("amd64" or "arm64", default "amd64").
#   3. SIGNER, SIGNING_KEY. Environment variables, see sdk_bootstrap.sh.
#
# OUTPUT:
#
#   1. SDK container images ghcr.io/flatcar/flatcar-sdk-{all,amd64,arm64}:[DOCKER VERSION] (local),
#       published to buildcache as containers/[DOCKER VERSION]/flatcar-sdk-{all,amd64,arm64}-[DOCKER VERSION].tar.zst
#       with .id files (the image id).
#   2. "./ci-cleanup.sh" with commands to clean up temporary build resources,
#        to be run after this step finishes / when this step is aborted.
#   3. If signer key was passed, signatures of artifacts from point 1, pushed along to buildcache.
#   4. DIGESTS of the artifacts from point 1, pushed to buildcache.
#   5. Logs: build-logs/[SDK VERSION]/sdk-container-logs-[ARCH]-[DATE].tar.xz on buildcache.

function sdk_container_build() {
    # Run a subshell, so the traps, environment changes and global
    # variables are not spilled into the caller.
    (
        set -euo pipefail

        _sdk_container_build_impl "${@}"
    )
}
# --

function _sdk_container_build_impl() {
    : "${ARCH:=amd64}"

    source ci-automation/ci_automation_common.sh
    source ci-automation/gpg_setup.sh
    source sdk_lib/sdk_container_common.sh

    source sdk_container/.repo/manifests/version.txt
    local vernum=${FLATCAR_SDK_VERSION}
    local docker_vernum
    docker_vernum=$(vernum_to_docker_image_version "${vernum}")

    mini_step_knobs sdk_container_build "flatcar-sdk-build-all-${docker_vernum}" ""

    local sdk_tarball="flatcar-sdk-${ARCH}-${vernum}.tar.bz2"
    copy_from_buildcache "sdk/${ARCH}/${vernum}/${sdk_tarball}" ./__build__

    apply_local_patches

    local failed=''
    local logdir='__build__/sdk-container-logs-to-upload/'
    mkdir -p "${logdir}"
    ./build_sdk_container_image -l "${logdir}" -x ./ci-cleanup.sh "./__build__/${sdk_tarball}" || failed=x

    if [[ -z ${failed} ]]; then
        local flavour
        for flavour in all amd64 arm64; do
            docker_image_to_buildcache "${CONTAINER_REGISTRY}/flatcar-sdk-${flavour}" "${docker_vernum}"
        done
    fi
    mini_upload_logs "${logdir}" "${FLATCAR_SDK_VERSION}" \
        "sdk-container-logs-${ARCH}-$(date --utc '+%F-%H%M-%S')"
    if [[ -n ${failed} ]]; then
        echo "Building the SDK container images of ${vernum} failed" >&2
        exit 1
    fi
}
# --
