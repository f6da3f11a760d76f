#!/bin/bash
#
# Miniature Flatcar scripts repository (flatcar-airflow test fixture).
#
# >>> This file is supposed to be SOURCED from the repository ROOT. <<<
#
# vm_build() should be called w/ the positional INPUT parameters below.

# Vendor images build automation stub.
#   This script will build one or more vendor images ("vm") using a pre-built packages container.
#
# PREREQUISITES:
#
#   1. SDK version and OS image version are recorded in sdk_container/.repo/manifests/version.txt
#   2. Scripts repo version tag of OS image version to be built is available and checked out.
#   3. Flatcar packages container is available via build cache server
#       from "/containers/[VERSION]/flatcar-packages-[ARCH]-[FLATCAR_VERSION].tar.zst" or present locally.
#   4. The generic Flatcar image (and its sysext, kernel, version.txt and OEM sysexts) must be
#       present in build cache server.
#
# INPUT:
#
#   1. Architecture (ARCH) of the TARGET vm images ("arm64", "amd64").
#   2. Image formats to be built. Can be multiple, separated by spaces. Vendor names work too:
#       "vmware..." builds vmware, vmware_ova and vmware_raw; "ami..." and "aws..." build ami and
#       ami_vmdk. "qemu" and "qemu_uefi_secure" are skipped (the tests use the generic image).
#       See image_to_vm.sh for the valid formats.
#
# OPTIONAL INPUT:
#
#   3. SIGNER, SIGNING_KEY. Environment variables, see sdk_bootstrap.sh.
#
# OUTPUT:
#
#   1. Exported VM image(s) in ./images/latest/, pushed to buildcache ( images/[ARCH]/[FLATCAR_VERSION]/ )
#   2. "./ci-cleanup.sh" with commands to clean up temporary build resources,
#        to be run after this step finishes / when this step is aborted.
#   3. If signer key was passed, signatures of artifacts from point 1, pushed along to buildcache.
#   4. DIGESTS of the artifacts from point 1, pushed to buildcache.

function vm_build() {
    # Run a subshell, so the traps, environment changes and global
    # variables are not spilled into the caller.
    (
        set -euo pipefail

        _vm_build_impl "${@}"
    )
}
# --

function _vm_build_impl() {
    local arch=${1}
    shift
    # $@ now holds the image formats

    source ci-automation/ci_automation_common.sh
    source ci-automation/gpg_setup.sh

    source sdk_container/.repo/manifests/version.txt
    local vernum=${FLATCAR_VERSION}
    local docker_vernum
    docker_vernum=$(vernum_to_docker_image_version "${vernum}")

    local packages="flatcar-packages-${arch}"
    local packages_image="${packages}:${docker_vernum}"
    docker_image_from_buildcache "${packages}" "${docker_vernum}"

    local vms_container="flatcar-vms-${arch}-${docker_vernum}"
    mini_step_knobs vm_build "${vms_container}" "${packages_image}" "${arch}"

    apply_local_patches

    # vendor names stand for the formats they need
    local -a formats=()
    local fmt
    local vmware='' ami=''
    for fmt in "$@"; do
        case ${fmt} in
            vmware*) vmware=x ;;
            ami* | aws*) ami=x ;;
            *) formats+=("${fmt}") ;;
        esac
    done
    [[ -z ${vmware} ]] || formats+=(vmware vmware_ova vmware_raw)
    [[ -z ${ami} ]] || formats+=(ami ami_vmdk)

    source sdk_lib/sdk_container_common.sh
    if is_official "${vernum}"; then
        export COREOS_OFFICIAL=1
    else
        export COREOS_OFFICIAL=0
    fi

    local images_in="images-in/"
    local file
    rm -rf "${images_in}"
    for file in flatcar_production_image.bin.bz2 flatcar_production_image_sysext.squashfs \
        flatcar_production_image.vmlinuz version.txt; do
        copy_from_buildcache "images/${arch}/${vernum}/${file}" "${images_in}"
    done
    source build_library/oem_sysexts.sh
    local -a oem_ids=()
    get_oem_id_list "${arch}" oem_ids
    local oem_id
    for oem_id in "${oem_ids[@]}"; do
        copy_from_buildcache "images/${arch}/${vernum}/oem-${oem_id}.raw" "${images_in}"
    done

    lbunzip2 "${images_in}/flatcar_production_image.bin.bz2"
    ./run_sdk_container -x ./ci-cleanup.sh -n "${vms_container}" -C "${packages_image}" -v "${vernum}" \
        mkdir -p "${CONTAINER_IMAGE_ROOT}/${arch}-usr/latest"
    ./run_sdk_container -n "${vms_container}" -C "${packages_image}" -v "${vernum}" \
        mv "${images_in}" "${CONTAINER_IMAGE_ROOT}/${arch}-usr/latest-input"

    local compression
    for fmt in "${formats[@]}"; do
        if [[ ${fmt} == qemu || ${fmt} == qemu_uefi_secure ]]; then
            continue
        fi
        echo " ###################  VENDOR '${fmt}' ################### "
        case ${fmt} in
            openstack_mini | digitalocean) compression="gz,bz2" ;;
            openstack) compression="gz,bz2,none" ;;
            qemu_uefi) compression="bz2,none" ;;
            hyperv | hyperv_vhdx) compression="zip" ;;
            scaleway | kubevirt | proxmoxve | stackit | exoscale | oraclecloud) compression="none" ;;
            akamai) compression="gz" ;;
            *) compression="bz2" ;;
        esac
        ./run_sdk_container -n "${vms_container}" -C "${packages_image}" -v "${vernum}" \
            ./image_to_vm.sh --format "${fmt}" --board="${arch}-usr" \
            --from "${CONTAINER_IMAGE_ROOT}/${arch}-usr/latest-input" \
            --to "${CONTAINER_IMAGE_ROOT}/${arch}-usr/latest" \
            --image_compression_formats="${compression}" \
            --only_store_compressed
    done

    # copy the results out of the container's image root and push them to the build cache
    local images_out="images/"
    rm -rf "${images_out}"
    ./run_sdk_container -n "${vms_container}" -C "${packages_image}" -v "${vernum}" \
        mv "${CONTAINER_IMAGE_ROOT}/${arch}-usr/" "./${images_out}/"

    (
        cd images/latest
        ln -sfn flatcar_production_openstack_image.img.bz2 flatcar_production_brightbox_image.img.bz2
    )
    # the PXE kernel is a symlink to the generic kernel: digest it next to the outputs
    mv images/latest-input/flatcar_production_image.vmlinuz images/latest/
    create_digests "${SIGNER}" "images/latest/"*
    sign_artifacts "${SIGNER}" "images/latest/"*
    mv images/latest/flatcar_production_image.vmlinuz* images/latest-input/
    copy_to_buildcache "images/${arch}/${vernum}/" "images/latest/"*
}
# --
