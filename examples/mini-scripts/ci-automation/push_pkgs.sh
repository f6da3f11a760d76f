#!/bin/bash
#
# Miniature Flatcar scripts repository (flatcar-airflow test fixture).
#
# >>> This file is supposed to be SOURCED from the repository ROOT. <<<
#
# push_packages() should be called w/ the positional INPUT parameters below.

# OS image binary packages publisher automation stub.
#   This script will publish the packages from a pre-built packages container to
#   the buildcache server, turning the build cache into a binary packages server.
#   Before publishing it runs ./build_dev_binpkgs, which builds the packages the developer
#   container needs (possibly packages the packages step did not build).
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
#
# OUTPUT:
#
#   1. Binary packages (with portage's Packages index) published to buildcache at
#       "boards/[ARCH]-usr/[VERSION]/pkgs".
#   2. "./ci-cleanup.sh" with commands to clean up temporary build resources,
#        to be run after this step finishes / when this step is aborted.
#   3. If signer key was passed, signatures of the binary packages, pushed along to buildcache.
#
# Unlike the Flatcar script, which uploads from inside the container, the miniature copies the
# packages out of the container (docker cp) and uploads them from the host.

function push_packages() {
    # Run a subshell, so the traps, environment changes and global
    # variables are not spilled into the caller.
    (
        set -euo pipefail

        _push_packages_impl "${@}"
    )
}
# --

function _push_packages_impl() {
    local arch=${1}

    source ci-automation/ci_automation_common.sh
    source ci-automation/gpg_setup.sh

    source sdk_container/.repo/manifests/version.txt
    local vernum=${FLATCAR_VERSION}
    local docker_vernum
    docker_vernum=$(vernum_to_docker_image_version "${vernum}")

    local packages="flatcar-packages-${arch}"
    local packages_image="${packages}:${docker_vernum}"
    docker_image_from_buildcache "${packages}" "${docker_vernum}"

    local my_name="flatcar-packages-publisher-${arch}-${docker_vernum}"
    mini_step_knobs push_packages "${my_name}" "${packages_image}" "${arch}"

    ./run_sdk_container -x ./ci-cleanup.sh -n "${my_name}" -C "${packages_image}" \
        ./build_dev_binpkgs --board="${arch}-usr"

    local pkgs_dir="__build__/pkgs-${arch}-usr"
    rm -rf "${pkgs_dir}"
    mkdir -p "${pkgs_dir}"
    "${docker}" cp "${my_name}:/build/${arch}-usr/var/lib/portage/pkgs/." "${pkgs_dir}/"
    (
        cd "${pkgs_dir}"
        sign_artifacts "${SIGNER}" ./*
        copy_to_buildcache "boards/${arch}-usr/${vernum}/pkgs" ./*
    )
}
# --
