# Miniature Flatcar scripts repository (flatcar-airflow test fixture).
#
# POSIX sh helpers of the in-container build commands (./build_packages, ./build_dev_binpkgs,
# ./build_image): the "ebuilds" are the *.ebuild files of the in-tree overlays under
# sdk_container/src/third_party/, and "building" one writes a small but real binary package:
#
#   /build/<board>/var/lib/portage/pkgs/<category>/<PF>.gpkg.tar
#       <PF>/gpkg-1
#       <PF>/metadata.tar   CATEGORY, PF, repository, the ebuild
#       <PF>/image.tar      ./usr/share/mini-pkgs/<category>/<PN>/INFO (what was built, for which version)
#
# plus a portage-style Packages index in the pkgs directory and a build log under
# /build/<board>/var/log/portage/.

# shellcheck shell=sh disable=SC2034

MINI_OVERLAYS=sdk_container/src/third_party
MINI_VERSIONFILE=/mnt/host/source/.repo/manifests/version.txt

mini_die() {
    echo "ERROR: $*" >&2
    exit 1
}

mini_tmpdir() {
    mktemp -d "${TMPDIR:-/tmp}/mini.XXXXXX"
}

# Prints "<repo> <category> <PN> <PVR> <ebuild path>" for every ebuild, sorted.
mini_ebuilds() {
    for ebuild in "${MINI_OVERLAYS}"/*/*/*/*.ebuild; do
        [ -f "${ebuild}" ] || continue
        rest=${ebuild#"${MINI_OVERLAYS}"/}
        repo=${rest%%/*}
        rest=${rest#*/}
        category=${rest%%/*}
        rest=${rest#*/}
        pn=${rest%%/*}
        pf=${rest#*/}
        pf=${pf%.ebuild}
        echo "${repo} ${category} ${pn} ${pf#"${pn}"-} ${ebuild}"
    done | sort
}

# mini_keyword EBUILD ARCH: true when the ebuild's KEYWORDS hold ARCH (or ~ARCH).
mini_keyword() {
    keywords=$(sed -n 's/^KEYWORDS="\(.*\)"$/\1/p' "$1")
    case " ${keywords} " in
        *" $2 "* | *" ~$2 "*) return 0 ;;
    esac
    return 1
}

# True for packages only the developer container needs.
mini_dev_only() {
    grep -q '^MINI_DEV_ONLY=1' "$1"
}

# mini_build_binpkg BOARD REPO CATEGORY PN PVR EBUILD
mini_build_binpkg() {
    board=$1
    pf="$4-$5"
    pkgdir="/build/${board}/var/lib/portage/pkgs"
    logdir="/build/${board}/var/log/portage"
    work=$(mini_tmpdir)
    info_dir="${work}/image/usr/share/mini-pkgs/$3/$4"
    mkdir -p "${info_dir}" "${work}/metadata" "${work}/${pf}" "${pkgdir}/$3" "${logdir}"
    printf '%s\n' "CATEGORY=$3" "PF=${pf}" "PN=$4" "PVR=$5" "REPO=$2" "BOARD=${board}" \
        "BUILT_FOR=${FLATCAR_VERSION}" >"${info_dir}/INFO"
    echo "$3" >"${work}/metadata/CATEGORY"
    echo "${pf}" >"${work}/metadata/PF"
    echo "$4" >"${work}/metadata/PN"
    echo "$2" >"${work}/metadata/repository"
    cp "$6" "${work}/metadata/${pf}.ebuild"
    tar -C "${work}/metadata" -cf "${work}/${pf}/metadata.tar" .
    tar -C "${work}/image" -cf "${work}/${pf}/image.tar" .
    : >"${work}/${pf}/gpkg-1"
    tar -C "${work}" -cf "${pkgdir}/$3/${pf}.gpkg.tar" "${pf}"
    rm -rf "${work}"
    echo ">>> Completed $3/${pf}::$2 for ${board} (built for ${FLATCAR_VERSION})" \
        >"${logdir}/$3:${pf}:$(date -u '+%Y%m%d-%H%M%S').log"
    echo ">>> Emerging binary package $3/${pf}::$2 for ${board}"
}

# mini_binpkg_metadata BINPKG FILE: prints a file (CATEGORY, PF, PN, repository) of the binary
# package's metadata.tar.
mini_binpkg_metadata() {
    _mbm_pf=$(basename "$1" .gpkg.tar)
    tar -xOf "$1" "${_mbm_pf}/metadata.tar" | tar -xOf - "./$2"
}

# mini_binpkg_install BINPKG ROOT: unpacks the package's image.tar into ROOT.
mini_binpkg_install() {
    _mbi_pf=$(basename "$1" .gpkg.tar)
    mkdir -p "$2"
    tar -xOf "$1" "${_mbi_pf}/image.tar" | tar -C "$2" -xf -
}

# Lists the binary packages of a board as "<category>/<PF>" (sorted).
mini_binpkgs() {
    pkgdir="/build/$1/var/lib/portage/pkgs"
    [ -d "${pkgdir}" ] || return 0
    (cd "${pkgdir}" && find . -name '*.gpkg.tar' | sed -e 's|^\./||' -e 's|\.gpkg\.tar$||' | sort)
}

# mini_write_packages_index BOARD: (re)writes the pkgs directory's Packages index.
mini_write_packages_index() {
    board=$1
    pkgdir="/build/${board}/var/lib/portage/pkgs"
    mkdir -p "${pkgdir}"
    cpvs=$(mini_binpkgs "${board}")
    count=0
    for cpv in ${cpvs}; do
        count=$((count + 1))
    done
    {
        echo "ARCH: ${board%-usr}"
        echo "PACKAGES: ${count}"
        echo "TIMESTAMP: $(date -u +%s)"
        echo "VERSION: 0"
        echo
        for cpv in ${cpvs}; do
            file="${pkgdir}/${cpv}.gpkg.tar"
            echo "CPV: ${cpv}"
            echo "MD5: $(md5sum "${file}" | cut -d' ' -f1)"
            echo "MTIME: $(stat -c %Y "${file}")"
            echo "PATH: ${cpv}.gpkg.tar"
            echo "REPO: $(mini_binpkg_metadata "${file}" repository)"
            echo "SIZE: $(stat -c %s "${file}")"
            echo
        done
    } >"${pkgdir}/Packages"
}
