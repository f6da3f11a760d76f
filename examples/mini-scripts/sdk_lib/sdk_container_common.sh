# Miniature Flatcar scripts repository (flatcar-airflow test fixture).
#
# Version string helpers and the version file writer shared by the SDK container tools and the
# ci-automation steps. Same function names, inputs and outputs as the Flatcar scripts repository;
# the implementation is this repository's own.
#
# Version strings come in two spellings:
#   tag form       <channel>-<MAJOR>.<MINOR>.<PATCH>[-<build id>]   e.g. main-4799.0.0-nightly-20260821-2100
#   vernum form    <MAJOR>.<MINOR>.<PATCH>[+<build id>]             e.g. 4799.0.0+nightly-20260821-2100
# and docker image tags use the vernum with every '+' replaced by '-'.

# shellcheck shell=bash disable=SC2034

sdk_container_common_versionfile="sdk_container/.repo/manifests/version.txt"
sdk_container_common_registry="ghcr.io/flatcar"
sdk_container_common_env_file="sdk_container/.sdkenv"

: "${docker:=docker}"

function call_docker() {
    "${docker}" "$@"
}
# --

# Prints a banner line.
function yell() {
    printf '\n###### %s ######\n' "$*"
}
# --

# The tag(s) of HEAD, or `git describe --tags` when HEAD has none.
function get_git_version() {
    local tags
    tags=$(git tag --points-at HEAD)
    if [[ -n ${tags} ]]; then
        echo "${tags}"
    else
        git describe --tags
    fi
}
# --

function get_sdk_version_from_versionfile() {
    (
        # shellcheck source=/dev/null
        source "${sdk_container_common_versionfile}"
        echo "${FLATCAR_SDK_VERSION}"
    )
}
# --

function get_version_from_versionfile() {
    (
        # shellcheck source=/dev/null
        source "${sdk_container_common_versionfile}"
        echo "${FLATCAR_VERSION}"
    )
}
# --

# True for an official (release) version number: plain MAJOR.MINOR.PATCH, no build id.
function is_official() {
    [[ ${1} =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]]
}
# --

# "alpha-3244.0.1-nightly2" or "3244.0.1+nightly2" => "nightly2"; nothing for a release.
function build_id_from_version() {
    local version=${1}
    if [[ ${version} =~ ^([a-z]+-)?[0-9.]+[-+](.*)$ ]]; then
        echo "${BASH_REMATCH[2]}"
    else
        echo ""
    fi
}
# --

# "alpha-3244.0.1-nightly2" => "3244.0.1"
function vernum_from_version() {
    local version=${1}
    if [[ ${version} =~ ^([a-z]+-)?([0-9.]+) ]]; then
        echo "${BASH_REMATCH[2]}"
    else
        echo ""
    fi
}
# --

# "alpha-3233.0.0-foo" => "3233.0.0+foo", "alpha-3233.0.0" => "3233.0.0"
function strip_version_prefix() {
    local version=${1}
    local build_id version_id
    build_id=$(build_id_from_version "${version}")
    version_id=$(vernum_from_version "${version}")
    if [[ -n ${build_id} ]]; then
        echo "${version_id}+${build_id}"
    else
        echo "${version_id}"
    fi
}
# --

# The first dash-separated field when it names a release channel, "developer" otherwise.
function channel_from_version() {
    local channel=${1%%-*}
    case ${channel} in
        alpha|beta|stable|lts) echo "${channel}" ;;
        *) echo "developer" ;;
    esac
}
# --

function get_git_channel() {
    channel_from_version "$(get_git_version)"
}
# --

# Docker tags cannot hold '+': "4799.0.0+nightly-20260821-2100" => "4799.0.0-nightly-20260821-2100"
function vernum_to_docker_image_version() {
    echo "${1//+/-}"
}
# --

# create_versionfile SDK_VERSION [OS_VERSION]
# Writes sdk_container/.repo/manifests/version.txt. Either version may be given in tag form or vernum
# form; OS_VERSION defaults to SDK_VERSION (a full build: SDK and OS share one version).
function create_versionfile() {
    local sdk_version=${1}
    local os_version=${2:-${1}}
    local build_id version_id
    build_id=$(build_id_from_version "${os_version}")
    version_id=$(vernum_from_version "${os_version}")
    sdk_version=$(strip_version_prefix "${sdk_version}")
    os_version=$(strip_version_prefix "${os_version}")

    yell "Writing versionfile '${sdk_container_common_versionfile}' to SDK '${sdk_version}', OS '${os_version}'."
    {
        echo "FLATCAR_VERSION=${os_version}"
        echo "FLATCAR_VERSION_ID=${version_id}"
        echo "FLATCAR_BUILD_ID=\"${build_id}\""
        echo "FLATCAR_SDK_VERSION=${sdk_version}"
    } >"${sdk_container_common_versionfile}"
}
# --
