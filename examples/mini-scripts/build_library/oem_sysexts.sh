# Miniature Flatcar scripts repository (flatcar-airflow test fixture).
#
# OEM sysext helpers (bash, sourced from the repository root).

# shellcheck shell=bash

# get_oem_id_list ARCH RESULT_ARRAY
# The OEM ids (e.g. "azure") whose coreos-base/oem-<id> ebuild has ARCH in its KEYWORDS.
function get_oem_id_list() {
    local arch=${1}
    local -n get_oem_id_list_out=${2}
    get_oem_id_list_out=()
    local ebuild keywords dir
    for ebuild in sdk_container/src/third_party/coreos-overlay/coreos-base/oem-*/*.ebuild; do
        [[ -f ${ebuild} ]] || continue
        keywords=$(sed -n 's/^KEYWORDS="\(.*\)"$/\1/p' "${ebuild}")
        if [[ " ${keywords} " == *" ${arch} "* || " ${keywords} " == *" ~${arch} "* ]]; then
            dir=$(basename "$(dirname "${ebuild}")")
            get_oem_id_list_out+=("${dir#oem-}")
        fi
    done
}
