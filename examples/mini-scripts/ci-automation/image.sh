#!/bin/bash
#
# Miniature Flatcar scripts repository (flatcar-airflow test fixture).
#
# >>> This file is supposed to be SOURCED from the repository ROOT. <<<
#
# image_build() should be called w/ the positional INPUT parameters below.

# Binary OS image build automation stub.
#   This script will build the OS image from a pre-built packages container.
#
# PREREQUISITES:
#
#   1. SDK version and OS image version are recorded in sdk_container/.repo/manifests/version.txt
#   2. Scripts repo version tag of OS image version to be built is available and checked out.
#   3. Flatcar packages container is available via build cache server
#       from "/containers/[VERSION]/flatcar-packages-[ARCH]-[FLATCAR_VERSION].tar.zst" or present locally.
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
#   1. OS image, dev container, sysexts and related artifacts in ./images/latest/, pushed to
#       buildcache ( images/[ARCH]/[FLATCAR_VERSION]/ ): flatcar_production_image.bin.bz2,
#       flatcar_production_image_sysext.squashfs, flatcar_production_image.vmlinuz, version.txt,
#       flatcar_test_update.gz, flatcar_developer_container.bin.bz2, oem-<id>.raw, <base sysext>.raw,
#       flatcar_production_image_{packages,contents}.txt
#   2. "./ci-cleanup.sh" with commands to clean up temporary build resources,
#        to be run after this step finishes / when this step is aborted.
#   3. If signer key was passed, signatures of artifacts from point 1, pushed along to buildcache.
#   4. DIGESTS of the artifacts from point 1, pushed to buildcache.

function image_build() {
    # Run a subshell, so the traps, environment changes and global
    # variables are not spilled into the caller.
    (
        set -euo pipefail

        _image_build_impl "${@}"
    )
}
# --

function _image_build_impl() {
    local arch=${1}

    source sdk_lib/sdk_container_common.sh
    local channel
    channel=$(get_git_channel)
    source ci-automation/ci_automation_common.sh
    source ci-automation/gpg_setup.sh

    source sdk_container/.repo/manifests/version.txt
    local vernum=${FLATCAR_VERSION}
    local docker_vernum
    docker_vernum=$(vernum_to_docker_image_version "${vernum}")

    local packages="flatcar-packages-${arch}"
    local packages_image="${packages}:${docker_vernum}"
    docker_image_from_buildcache "${packages}" "${docker_vernum}"

    local image_container="flatcar-images-${arch}-${docker_vernum}"
    mini_step_knobs image_build "${image_container}" "${packages_image}" "${arch}"

    local official_arg
    if is_official "${vernum}"; then
        export COREOS_OFFICIAL=1
        official_arg="--official"
    else
        export COREOS_OFFICIAL=0
        official_arg="--noofficial"
    fi

    apply_local_patches

    source ci-automation/base_sysexts.sh 'local'
    local base_sysexts_param
    base_sysexts_param=$(
        IFS=,
        echo "${ciabs_base_sysexts[*]}"
    )

    ./run_sdk_container -x ./ci-cleanup.sh -n "${image_container}" -C "${packages_image}" -v "${vernum}" \
        mkdir -p "${CONTAINER_IMAGE_ROOT}"
    ./run_sdk_container -n "${image_container}" -C "${packages_image}" -v "${vernum}" \
        ./set_official --board="${arch}-usr" "${official_arg}"
    ./run_sdk_container -n "${image_container}" -C "${packages_image}" -v "${vernum}" \
        ./build_image --board="${arch}-usr" --group="${channel}" \
        --base_sysexts="${base_sysexts_param}" \
        --output_root="${CONTAINER_IMAGE_ROOT}" \
        --only_store_compressed \
        prodtar container sysext oem_sysext

    # copy the results out of the container's image root and push them to the build cache
    local images_out="images/"
    rm -rf "${images_out}"
    ./run_sdk_container -n "${image_container}" -C "${packages_image}" -v "${vernum}" \
        mv "${CONTAINER_IMAGE_ROOT}/${arch}-usr/" "./${images_out}/"

    # the uncompressed images are not published
    rm "images/latest/flatcar_production_image.bin" "images/latest/flatcar_production_update.bin"
    create_digests "${SIGNER}" "images/latest/"*
    sign_artifacts "${SIGNER}" "images/latest/"*
    copy_to_buildcache "images/${arch}/${vernum}/" "images/latest/"*
}
# --
