#!/bin/bash
#
# Miniature Flatcar scripts repository (flatcar-airflow test fixture).
#
# >>> This file is supposed to be SOURCED from the repository ROOT. <<<
#
# image_changes() should be called w/ the positional INPUT parameters below.

# OS image differences display stub.
#   This script will display the differences between the last released (or nightly) image and the
#   currently built one.
#
# PREREQUISITES:
#
#   1. Artifacts describing the built image (flatcar_production_image_packages.txt,
#      flatcar_production_image_contents.txt) must be present in build cache server
#      ( images/[ARCH]/[FLATCAR_VERSION]/ ).
#   2. Scripts repo version tag of the OS image version is available and checked out.
#
# INPUT:
#
#   1. Architecture (ARCH) of the TARGET OS image ("arm64", "amd64").
#   2. What to compare against, must be either "last-release" or "last-nightly".
#       last-nightly: the nightly tag `git describe` finds (HEAD^ when HEAD is a nightly itself).
#       last-release: the newest release tag of the channel (main builds compare with alpha);
#         the miniature reads its images from the build cache too.
#
# OUTPUT:
#
#   1. The report is printed to standard output; nothing is stored. When the images to compare
#      with are not in the build cache, it says so and succeeds.

function image_changes() {
    # Run a subshell, so the traps, environment changes and global
    # variables are not spilled into the caller.
    (
        set -euo pipefail

        _image_changes_impl "${@}"
    )
}
# --

# Prints the previous nightly tag, empty when there is none.
function _image_changes_last_nightly_tag() {
    local head_tags search='HEAD'
    head_tags=$(git tag --points-at HEAD)
    if [[ ${head_tags} == *-nightly-* && ${head_tags} != *-INTERMEDIATE ]]; then
        # HEAD is a nightly: compare with the one before
        search='HEAD^'
    fi
    git describe --tags --abbrev=0 --match='*-nightly-*' --exclude='*-INTERMEDIATE' "${search}" 2>/dev/null || true
}
# --

# Prints the newest release tag of a channel not pointing at HEAD, empty when there is none.
function _image_changes_last_release_tag() {
    local channel=${1}
    local -a head_tags=()
    mapfile -t head_tags < <(git tag --points-at HEAD)
    git tag --list "${channel}-*" | grep -E "^${channel}-[0-9]+\.[0-9]+\.[0-9]+$" |
        while read -r tag; do
            [[ " ${head_tags[*]} " == *" ${tag} "* ]] || echo "${tag}"
        done | sort -V | tail -n1
}
# --

function _image_changes_impl() {
    local arch=${1}
    local what=${2}
    case ${what} in
        last-release | last-nightly) ;;
        *)
            echo "invalid mode '${what}', expected 'last-nightly' or 'last-release'" >&2
            return 1
            ;;
    esac

    source ci-automation/ci_automation_common.sh
    source sdk_lib/sdk_container_common.sh

    local version_b
    version_b=$(get_version_from_versionfile)
    mini_step_knobs image_changes \
        "flatcar-image-changes-${arch}-$(vernum_to_docker_image_version "${version_b}")" "" "${arch}"

    local tag_a='' version_a='' description
    if [[ ${what} == last-nightly ]]; then
        tag_a=$(_image_changes_last_nightly_tag)
        if [[ -z ${tag_a} ]]; then
            echo "No earlier nightly tag found: nothing to compare ${version_b} (${arch}) with."
            return 0
        fi
        version_a=$(git show "${tag_a}:sdk_container/.repo/manifests/version.txt" | sed -n 's/^FLATCAR_VERSION=//p')
        description="development version ${tag_a}"
    else
        local channel
        channel=$(get_git_channel)
        if [[ ${channel} == developer ]]; then
            channel=alpha
        fi
        tag_a=$(_image_changes_last_release_tag "${channel}")
        if [[ -z ${tag_a} ]]; then
            echo "No ${channel} release tag found: nothing to compare ${version_b} (${arch}) with."
            return 0
        fi
        version_a=${tag_a#*-}
        description="release ${tag_a}"
    fi

    local tmp
    tmp=$(mktemp -d)
    # shellcheck disable=SC2064
    trap "rm -rf '${tmp}'" EXIT
    local side version file
    for side in a b; do
        version=${version_a}
        [[ ${side} == b ]] && version=${version_b}
        for file in flatcar_production_image_packages.txt flatcar_production_image_contents.txt; do
            if ! curl "${CIA_CURL_OPTS[@]}" -o "${tmp}/${side}-${file}" \
                "https://${BUILDCACHE_SERVER}/images/${arch}/${version}/${file}" 2>/dev/null; then
                if [[ ${side} == a ]]; then
                    echo "The images of ${description} (${version_a}, ${arch}) are not in the build cache: nothing to compare with."
                    return 0
                fi
                echo "ERROR: images/${arch}/${version}/${file} is not in the build cache" >&2
                return 1
            fi
        done
    done

    echo "Image differences for ${arch} ${version_b}, compared to ${description} (${version_a})"
    echo "Image URL: https://${BUILDCACHE_SERVER}/images/${arch}/${version_b}/flatcar_production_image.bin.bz2"
    echo
    echo "== Package changes =="
    awk '
        # "cat/name-1.2.3-r1::repo" -> key "cat/name", version "1.2.3-r1"
        function split_cpv(cpv) {
            sub(/::.*$/, "", cpv)
            key = cpv; ver = ""
            if (match(cpv, /-[0-9][^-\/]*(-r[0-9]+)?$/)) {
                key = substr(cpv, 1, RSTART - 1)
                ver = substr(cpv, RSTART + 1)
            }
        }
        FNR == 1 { side++ }
        {
            split_cpv($0)
            if (side == 1) { old[key] = ver } else { new[key] = ver }
            all[key] = 1
        }
        END {
            n = 0
            for (k in all) keys[++n] = k
            for (i = 2; i <= n; i++)
                for (j = i; j > 1 && keys[j - 1] > keys[j]; j--) { t = keys[j]; keys[j] = keys[j - 1]; keys[j - 1] = t }
            changes = 0
            for (i = 1; i <= n; i++) {
                k = keys[i]
                if (!(k in new)) { print "-" k "-" old[k]; changes++ }
                else if (!(k in old)) { print "+" k "-" new[k]; changes++ }
                else if (old[k] != new[k]) { print "~" k ": " old[k] " -> " new[k]; changes++ }
            }
            if (changes == 0) print "No package changes."
        }
    ' "${tmp}/a-flatcar_production_image_packages.txt" "${tmp}/b-flatcar_production_image_packages.txt"
    echo
    echo "== Size changes =="
    awk '
        FNR == 1 { side++ }
        { if (side == 1) a += $1; else b += $1 }
        END {
            diff = b - a
            printf "Total size of the image files: %d -> %d bytes (%s%d)\n", a, b, (diff >= 0 ? "+" : ""), diff
        }
    ' "${tmp}/a-flatcar_production_image_contents.txt" "${tmp}/b-flatcar_production_image_contents.txt"
    echo
    echo "== File changes =="
    awk '
        FNR == 1 { side++ }
        {
            size = $1; $1 = ""; path = substr($0, 2)
            if (side == 1) old[path] = size; else new[path] = size
            all[path] = 1
        }
        END {
            n = 0
            for (p in all) paths[++n] = p
            for (i = 2; i <= n; i++)
                for (j = i; j > 1 && paths[j - 1] > paths[j]; j--) { t = paths[j]; paths[j] = paths[j - 1]; paths[j - 1] = t }
            changes = 0
            for (i = 1; i <= n; i++) {
                p = paths[i]
                if (!(p in new)) { print "-" p; changes++ }
                else if (!(p in old)) { print "+" p; changes++ }
                else if (old[p] != new[p]) { print "~" p " (" old[p] " -> " new[p] " bytes)"; changes++ }
            }
            if (changes == 0) print "No file changes."
        }
    ' "${tmp}/a-flatcar_production_image_contents.txt" "${tmp}/b-flatcar_production_image_contents.txt"
}
# --
