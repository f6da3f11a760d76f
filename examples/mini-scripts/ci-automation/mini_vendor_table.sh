# Miniature Flatcar scripts repository (flatcar-airflow test fixture).
#
# Which files the (fake) tests of each vendor image need from images/<arch>/<version>/ on the build
# cache, and on which architectures a vendor can be tested. POSIX sh: sourced by ci-automation/test.sh
# on the host (which downloads the files into __TESTS__/<image>/) and by ci-automation/vendor_test.sh
# in the mantle container.

# shellcheck shell=sh

# mini_vendor_files VENDOR ARCH
# Prints the files one per line, or "unsupported" when VENDOR cannot be tested on ARCH.
# Returns 1 for an unknown vendor.
mini_vendor_files() {
    _mvf_amd64_only=0
    case $1 in
        qemu)
            _mvf_amd64_only=1
            _mvf_files="flatcar_production_image.bin.bz2"
            ;;
        qemu_uefi)
            _mvf_files="flatcar_production_image.bin.bz2 flatcar_production_qemu_uefi_efi_code.qcow2 flatcar_production_qemu_uefi_efi_vars.qcow2"
            ;;
        qemu_uefi_secure)
            _mvf_files="flatcar_production_image.bin.bz2 flatcar_production_qemu_uefi_secure_efi_code.qcow2 flatcar_production_qemu_uefi_secure_efi_vars.qcow2"
            ;;
        qemu_update) _mvf_files="flatcar_production_image.bin.bz2 flatcar_test_update.gz" ;;
        aws) _mvf_files="flatcar_production_ami_vmdk_image.vmdk.bz2" ;;
        azure) _mvf_files="flatcar_production_azure_image.vhd.bz2" ;;
        gce)
            _mvf_amd64_only=1
            _mvf_files="flatcar_production_gce.tar.gz"
            ;;
        vmware)
            _mvf_amd64_only=1
            _mvf_files="flatcar_production_vmware_ova.ova"
            ;;
        digitalocean)
            _mvf_amd64_only=1
            _mvf_files="flatcar_production_digitalocean_image.bin.bz2"
            ;;
        openstack | brightbox)
            _mvf_amd64_only=1
            _mvf_files="flatcar_production_openstack_image.img.bz2"
            ;;
        hetzner) _mvf_files="flatcar_production_hetzner_image.bin.bz2" ;;
        akamai) _mvf_files="flatcar_production_akamai_image.bin.gz" ;;
        stackit) _mvf_files="flatcar_production_stackit_image.img" ;;
        *) return 1 ;;
    esac
    if [ "${_mvf_amd64_only}" = 1 ] && [ "$2" != amd64 ]; then
        echo unsupported
        return 0
    fi
    for _mvf_file in ${_mvf_files}; do
        echo "${_mvf_file}"
    done
}
