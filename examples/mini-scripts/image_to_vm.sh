#!/bin/sh
#
# Miniature Flatcar scripts repository (flatcar-airflow test fixture).
#
# Converts the generic image into a vendor image ("vm"), inside the packages container.
# A vendor disk here is a tar archive holding the generic image and a vendor.txt, named and
# compressed like the real outputs, e.g.
#   qemu_uefi   flatcar_production_qemu_uefi_image.img(.bz2), flatcar_production_qemu_uefi.sh,
#               flatcar_production_qemu_uefi[_secure]_efi_{code,vars}.qcow2
#   vmware      flatcar_production_vmware_image.vmdk.bz2, flatcar_production_vmware.vmx
#   vmware_ova  flatcar_production_vmware_ova.ova
#   ami         flatcar_production_ami_image.bin.bz2     ami_vmdk  flatcar_production_ami_vmdk_image.vmdk.bz2
#   pxe         flatcar_production_pxe.vmlinuz (symlink), flatcar_production_pxe_image.cpio.gz
#   gce         flatcar_production_gce.tar.gz
#   other       flatcar_production_<format>_image.<bin|img|qcow2|vhd|vhdx|vmdk|iso>[.bz2|.gz]
# "zip" compression is not available in the miniature's containers: such disks stay uncompressed.
#
# Usage: ./image_to_vm.sh --format FORMAT --board=<arch>-usr --from DIR --to DIR
#                         [--image_compression_formats=bz2,gz,none,...] [--only_store_compressed]
set -eu
# shellcheck disable=SC3040 # (busybox ash and dash >= 0.5.12 have pipefail)
set -o pipefail

VALID_FORMATS="akamai ami ami_vmdk azure cloudsigma cloudstack cloudstack_vhd digitalocean exoscale gce hetzner"
VALID_FORMATS="${VALID_FORMATS} hyperv hyperv_vhdx iso kubevirt openstack openstack_mini oraclecloud parallels"
VALID_FORMATS="${VALID_FORMATS} proxmoxve pxe qemu_uefi scaleway stackit vagrant vagrant_parallels virtualbox"
VALID_FORMATS="${VALID_FORMATS} vmware vmware_ova vmware_raw xen nutanix"

format=""
board=""
from=""
to=""
compression="bz2"
only_compressed=0
while [ $# -gt 0 ]; do
    opt=$1
    shift
    val=""
    case ${opt} in
        --format | --board | --from | --to | --image_compression_formats)
            [ $# -ge 1 ] || { echo "ERROR: ${opt} needs a value" >&2; exit 1; }
            val=$1
            shift
            ;;
        --*=*)
            val=${opt#*=}
            opt=${opt%%=*}
            ;;
    esac
    case ${opt} in
        --format) format=${val} ;;
        --board) board=${val} ;;
        --from) from=${val} ;;
        --to) to=${val} ;;
        --image_compression_formats) compression=${val} ;;
        --only_store_compressed) only_compressed=1 ;;
    esac
done
if [ -z "${format}" ] || [ -z "${board}" ] || [ -z "${from}" ] || [ -z "${to}" ]; then
    echo "Usage: ./image_to_vm.sh --format FORMAT --board=BOARD --from DIR --to DIR" >&2
    exit 1
fi
case " ${VALID_FORMATS} " in
    *" ${format} "*) ;;
    *) echo "ERROR: Invalid image format '${format}' (valid: ${VALID_FORMATS})" >&2; exit 1 ;;
esac
generic="${from}/flatcar_production_image.bin"
[ -f "${generic}" ] || { echo "ERROR: ${generic} is missing (decompressed generic image)" >&2; exit 1; }
# shellcheck source=/dev/null
. "${from}/version.txt"
mkdir -p "${to}"
work=$(mktemp -d "${TMPDIR:-/tmp}/vm.XXXXXX")
trap 'rm -rf "${work}"' EXIT

# write_disk FILE: the vendor disk (a tar of the generic image plus vendor.txt)
write_disk() {
    mkdir -p "${work}/disk"
    cp "${generic}" "${work}/disk/flatcar_production_image.bin"
    printf 'FORMAT=%s\nBOARD=%s\nFLATCAR_VERSION=%s\n' "${format}" "${board}" "${FLATCAR_VERSION}" \
        >"${work}/disk/vendor.txt"
    tar -C "${work}/disk" -cf "$1" .
}

# compress_disk FILE: compressed copies per --image_compression_formats
compress_disk() {
    keep=0
    old_ifs=${IFS}
    IFS=,
    for compr in ${compression}; do
        case ${compr} in
            bz2) bzip2 -c "$1" >"$1.bz2" ;;
            gz) gzip -c "$1" >"$1.gz" ;;
            none) keep=1 ;;
            zip)
                echo "WARNING: zip compression is not available in the miniature, keeping $(basename "$1") uncompressed" >&2
                keep=1
                ;;
            *) IFS=${old_ifs}; echo "ERROR: unknown compression '${compr}'" >&2; exit 1 ;;
        esac
    done
    IFS=${old_ifs}
    if [ "${only_compressed}" = 1 ] && [ "${keep}" = 0 ]; then
        rm -f "$1"
    fi
}

prefix="${to}/flatcar_production_${format}"
case ${format} in
    vmware_ova)
        write_disk "${work}/disk.vmdk"
        printf '<?xml version="1.0"?>\n<Envelope><!-- %s %s --></Envelope>\n' "${FLATCAR_VERSION}" "${board}" \
            >"${work}/flatcar_production_vmware_ova.ovf"
        tar -C "${work}" -cf "${prefix}.ova" flatcar_production_vmware_ova.ovf disk.vmdk
        ;;
    gce)
        write_disk "${work}/disk.raw"
        tar -C "${work}" -cf - disk.raw | gzip -c >"${prefix}.tar.gz"
        ;;
    vagrant | vagrant_parallels)
        write_disk "${work}/box-disk"
        tar -C "${work}" -cf "${prefix}.box" box-disk
        ;;
    parallels)
        write_disk "${work}/disk.hdd"
        tar -C "${work}" -cf - disk.hdd | gzip -c >"${prefix}.pvm.tgz"
        ;;
    pxe)
        mkdir -p "${work}/initrd"
        cp "${generic}" "${work}/initrd/usr.squashfs"
        (cd "${work}/initrd" && find . | cpio -o -H newc 2>/dev/null) | gzip -c >"${prefix}_image.cpio.gz"
        ln -sfn flatcar_production_image.vmlinuz "${prefix}.vmlinuz"
        ;;
    *)
        case ${format} in
            qemu_uefi | openstack | openstack_mini | oraclecloud | cloudsigma | stackit | proxmoxve | nutanix) ext=img ;;
            scaleway | kubevirt | exoscale) ext=qcow2 ;;
            vmware | virtualbox | ami_vmdk) ext=vmdk ;;
            azure | hyperv | cloudstack_vhd) ext=vhd ;;
            hyperv_vhdx) ext=vhdx ;;
            iso) ext=iso ;;
            *) ext=bin ;;
        esac
        write_disk "${prefix}_image.${ext}"
        compress_disk "${prefix}_image.${ext}"
        ;;
esac

case ${format} in
    qemu_uefi)
        printf '#!/bin/sh\n# Start the Flatcar %s qemu UEFI image (%s)\necho "mini-scripts: no qemu here"\n' \
            "${FLATCAR_VERSION}" "${board}" >"${prefix}.sh"
        chmod 0755 "${prefix}.sh"
        for kind in efi_code efi_vars secure_efi_code secure_efi_vars; do
            printf 'MINI-OVMF %s for Flatcar %s (%s)\n' "${kind}" "${FLATCAR_VERSION}" "${board}" \
                >"${prefix}_${kind}.qcow2"
        done
        ;;
    vmware)
        printf '.encoding = "UTF-8"\ndisplayName = "Flatcar %s"\nscsi0:0.fileName = "flatcar_production_vmware_image.vmdk"\n' \
            "${FLATCAR_VERSION}" >"${prefix}.vmx"
        ;;
    virtualbox)
        printf '<?xml version="1.0"?>\n<Envelope><!-- %s %s --></Envelope>\n' "${FLATCAR_VERSION}" "${board}" \
            >"${prefix}.ovf"
        ;;
esac
echo "image_to_vm.sh: built ${format} for ${board} in ${to}"
