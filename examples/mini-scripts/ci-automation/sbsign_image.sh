#!/bin/bash
#
# Miniature Flatcar scripts repository (flatcar-airflow test fixture).
#
# >>> This file is supposed to be SOURCED from the repository ROOT. <<<
#
# sbsign_image() should be called w/ the positional INPUT parameters below.

# Secure Boot image signing build automation stub.
#   This script will sign an existing OS image for Secure Boot.
#
# PREREQUISITES:
#
#   1. SDK version and OS image version are recorded in sdk_container/.repo/manifests/version.txt
#   2. Scripts repo version tag of OS image version to be built is available and checked out.
#   3. The generic Flatcar image must be present in build cache server
#       ( images/[ARCH]/[FLATCAR_VERSION]/flatcar_production_image.bin.bz2 ).
#   4. The SDK container flatcar-sdk-[ARCH] of the SDK version is in the registry or the build cache.
#
# INPUT:
#
#   1. Architecture (ARCH) of the TARGET OS image ("arm64", "amd64").
#
# OPTIONAL INPUT:
#
#   1. SIGNER, SIGNING_KEY. Environment variables, see sdk_bootstrap.sh.
#   2. SBSIGN_KEY, SBSIGN_CERT. Environment variables: the Secure Boot key and certificate files,
#       passed into the SDK container (its defaults: /usr/share/sb_keys/shim.{key,pem}). The
#       miniature bind-mounts them into the container at the same path (its SDK has no sb_keys).
#   3. A file ../scripts.patch to apply with "git am -3" for the scripts repo.
#
# OUTPUT:
#
#   1. OS image and related artifacts signed for Secure Boot pushed to buildcache
#       ( images/[ARCH]/[FLATCAR_VERSION]/: flatcar_production_image.bin.bz2,
#       flatcar_production_image.vmlinuz, flatcar_production_image.grub ), overwriting the unsigned files.
#   2. "./ci-cleanup.sh" with commands to clean up temporary build resources,
#        to be run after this step finishes / when this step is aborted.
#   3. If signer key was passed, signatures of artifacts from point 1, pushed along to buildcache.
#   4. DIGESTS of the artifacts from point 1, pushed to buildcache.

function sbsign_image() {
    # Run a subshell, so the traps, environment changes and global
    # variables are not spilled into the caller.
    (
        set -euo pipefail

        _sbsign_image_impl "${@}"
    )
}
# --

function _sbsign_image_impl() {
    local arch=${1}

    source sdk_lib/sdk_container_common.sh
    local channel
    channel=$(get_git_channel)
    source ci-automation/ci_automation_common.sh
    source ci-automation/gpg_setup.sh
    source sdk_container/.repo/manifests/version.txt

    if is_official "${FLATCAR_VERSION}"; then
        export COREOS_OFFICIAL=1
    else
        export COREOS_OFFICIAL=0
    fi

    apply_local_patches

    local images_remote="images/${arch}/${FLATCAR_VERSION}"
    local images_local="__build__/images/images/${arch}-usr/${channel}-${FLATCAR_VERSION}"

    rm -rf "${images_local}"
    copy_from_buildcache "${images_remote}/flatcar_production_image.bin.bz2" "${images_local}"
    lbunzip2 --force "${images_local}/flatcar_production_image.bin.bz2"

    # The SDK from the registry, or from the build cache (a nightly's SDK).
    local sdk_name="flatcar-sdk-${arch}"
    local docker_sdk_vernum
    docker_sdk_vernum=$(vernum_to_docker_image_version "${FLATCAR_SDK_VERSION}")
    docker_image_from_registry_or_buildcache "${sdk_name}" "${docker_sdk_vernum}"
    local sdk_image
    sdk_image=$(docker_image_fullname "${sdk_name}" "${docker_sdk_vernum}")

    local docker_vernum
    docker_vernum=$(vernum_to_docker_image_version "${FLATCAR_VERSION}")
    local sbsign_container="flatcar-sbsign-image-${arch}-${docker_vernum}"
    mini_step_knobs sbsign_image "${sbsign_container}" "${sdk_image}" "${arch}"

    local -a key_mounts=()
    local var
    for var in SBSIGN_KEY SBSIGN_CERT; do
        if [[ -n ${!var:-} ]]; then
            key_mounts+=(-m "${!var}:${!var}:ro")
        fi
    done
    ./run_sdk_container -x ./ci-cleanup.sh -n "${sbsign_container}" -v "${FLATCAR_VERSION}" -U \
        -C "${sdk_image}" "${key_mounts[@]}" \
        ./sbsign_image --board="${arch}-usr" \
        --group="${channel}" --version="${FLATCAR_VERSION}" \
        --output_root="${CONTAINER_IMAGE_ROOT}" \
        --only_store_compressed

    # the uncompressed image is not published, and the update image did not change
    rm "${images_local}"/flatcar_production_{image,update}.bin
    create_digests "${SIGNER}" "${images_local}"/*
    sign_artifacts "${SIGNER}" "${images_local}"/*
    copy_to_buildcache "${images_remote}"/ "${images_local}"/*
}
# --
