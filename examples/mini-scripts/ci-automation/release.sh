#!/bin/bash
#
# Miniature Flatcar scripts repository (flatcar-airflow test fixture).
#
# >>> This file is supposed to be SOURCED from the repository ROOT. <<<
#
# release_build() is currently called with no positional INPUT parameters but uses the signing env vars.

# Release build automation stub.
#   This script will release the image build from bincache to the cloud offers.
#
# PREREQUISITES:
#
#   1. SDK version and OS image version are recorded in sdk_container/.repo/manifests/version.txt
#   2. Scripts repo version tag of OS image version to be built is available and checked out.
#   3. Mantle container docker image reference is stored in sdk_container/.repo/manifests/mantle-container
#      (the image must be present locally: the miniature does not pull).
#   4. The images of both architectures are available on buildcache ( images/[ARCH]/[FLATCAR_VERSION]/ ).
#
# INPUT:
#
#   (none)
#
# OPTIONAL INPUT:
#
#   1. SIGNER, SIGNING_KEY. Environment variables, see sdk_bootstrap.sh.
#   2. REGISTRY_USERNAME, REGISTRY_PASSWORD. Docker registry login for the SDK push; when either is
#        empty the SDK is not pushed (the miniature never pushes: it has no registry).
#   3. Cloud credentials as secrets via the environment variables (base64)
#      AWS_CREDENTIALS, AWS_MARKETPLACE_CREDENTIALS, AWS_MARKETPLACE_ARN, AWS_CLOUDFORMATION_CREDENTIALS,
#      GCP_JSON_KEY, GOOGLE_RELEASE_CREDENTIALS, and RCLONE_CONFIGURATION_FILE (the release bucket).
#      They are read from sdk_container/.env ("export VAR=value" lines), which is sourced here and in
#      the mantle container; all of them must be set (see ci-automation/mini_plume.sh).
#
# OUTPUT:
#
#   1. The cloud images are published with mantle's plume (the miniature's fake plume:
#       ci-automation/mini_plume.sh)
#   2. The AWS AMI text files are pushed to buildcache ( images/[ARCH]/[FLATCAR_VERSION]/
#       flatcar_production_ami_all.json, flatcar_production_ami_hvm.txt )
#   3. "./ci-cleanup.sh" with commands to clean up temporary build resources,
#        to be run after this step finishes / when this step is aborted.
#   4. If signer key was passed, signatures of artifacts from point 2, pushed along to buildcache.
#   5. DIGESTS of the artifacts from point 2, pushed to buildcache.

function release_build() {
    # Run a subshell, so the traps, environment changes and global
    # variables are not spilled into the caller.
    (
        set -euo pipefail

        _release_build_impl "${@}"
    )
}
# --

# copy_from_bincache_to_bucket CHANNEL ARCH VERSION: the real one syncs the images and binary packages
# to the release bucket with rclone; a failure only skips the copy. The miniature has no bucket.
function copy_from_bincache_to_bucket() {
    local channel=${1} arch=${2} version=${3}
    echo "Copying the images from bincache to CloudFlare bucket"
    if [[ -z ${RCLONE_CONFIGURATION_FILE} ]]; then
        echo "ERROR: Skipping images copy to bucket due to failure"
        return 0
    fi
    echo "mini-scripts: no release bucket: images/${arch}/${version} not copied to ${channel}/${arch}-usr/${version}"
}
# --

# publish_sdk DOCKER_SDK_VERSION: pushes the SDK containers (a release that built its own SDK).
function publish_sdk() {
    local docker_sdk_vernum=${1}
    [[ -z ${REGISTRY_PASSWORD} ]] || [[ -z ${REGISTRY_USERNAME} ]] && return 0
    echo "mini-scripts: no registry: flatcar-sdk-{all,amd64,arm64}:${docker_sdk_vernum} not pushed"
}
# --

function _release_build_impl() {
    source sdk_lib/sdk_container_common.sh
    source ci-automation/ci_automation_common.sh
    source ci-automation/gpg_setup.sh

    source sdk_container/.repo/manifests/version.txt
    # Needed because we are not the SDK container here
    touch sdk_container/.env
    source sdk_container/.env
    local sdk_version=${FLATCAR_SDK_VERSION}
    local docker_sdk_vernum
    docker_sdk_vernum=$(vernum_to_docker_image_version "${sdk_version}")
    local vernum=${FLATCAR_VERSION}
    local docker_vernum
    docker_vernum=$(vernum_to_docker_image_version "${vernum}")
    local channel
    channel=$(get_git_channel)

    local container_name="flatcar-publish-${docker_vernum}"
    local mantle_ref
    mantle_ref=$(<sdk_container/.repo/manifests/mantle-container)
    ci_cleanup_add "docker rm -f '${container_name}'"
    mini_step_knobs release_build "${container_name}" "${mantle_ref}"

    # (plume downloads the images it publishes: the miniature's plume has no network, so look here)
    local arch
    for arch in amd64 arm64; do
        if ! check_bincache_images_existence \
            "https://${BUILDCACHE_SERVER}/images/${arch}/${vernum}/flatcar_production_image.bin.bz2"; then
            echo "ERROR: images/${arch}/${vernum}/flatcar_production_image.bin.bz2 is not in the build cache" >&2
            return 1
        fi
    done

    "${docker}" run --pull never --rm --name="${container_name}" --network none \
        -w /work -v "${PWD}":/work "${mantle_ref}" \
        sh -c ". sdk_container/.env && ci-automation/mini_plume.sh ${channel@Q}"
    # Push flatcar_production_ami_*txt and flatcar_production_ami_*json to the right bincache folder
    local -a amis=()
    for arch in amd64 arm64; do
        amis=("aws-${arch}/flatcar_production_ami_"*txt "aws-${arch}/flatcar_production_ami_"*json)
        if [[ -f ${amis[0]} ]]; then
            create_digests "${SIGNER}" "${amis[@]}"
            sign_artifacts "${SIGNER}" "${amis[@]}"
            copy_to_buildcache "images/${arch}/${vernum}/" "aws-${arch}/flatcar_production_ami_"*txt* \
                "aws-${arch}/flatcar_production_ami_"*json*
        fi
        copy_from_bincache_to_bucket "${channel}" "${arch}" "${vernum}"
    done
    if [[ ${vernum} == "${sdk_version}" ]]; then
        publish_sdk "${docker_sdk_vernum}"
    fi
    echo "===="
    echo "Done, now you can copy the images to Origin"
    echo "===="
}
# --
