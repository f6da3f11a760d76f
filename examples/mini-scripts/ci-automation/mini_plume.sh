#!/bin/sh
#
# Miniature Flatcar scripts repository (flatcar-airflow test fixture).
#
# What release.sh's _inside_mantle does in the mantle container, with a fake plume: run by
# release_build as `sh -c ". sdk_container/.env && ci-automation/mini_plume.sh CHANNEL"` in the
# mantle container (busybox: no bash, no git), in the work tree (/work), with the version.txt of the tag.
#
# INPUT (environment, from sdk_container/.env, base64 like the real secrets):
#   AWS_CREDENTIALS, AWS_MARKETPLACE_CREDENTIALS, AWS_MARKETPLACE_ARN, AWS_CLOUDFORMATION_CREDENTIALS
#   GCP_JSON_KEY, GOOGLE_RELEASE_CREDENTIALS
#   Every one must be set (release.sh runs with `set -u`); an offer whose credentials are empty is
#   not published ("plume: no credentials for <offer>"; the real plume fails instead).
# OUTPUT (work tree):
#   aws-<arch>/flatcar_production_ami_all.json, aws-<arch>/flatcar_production_ami_hvm.txt: the AMIs
#     "published" (plume pre-release + release), one fake AMI id per region, derived from the version
#   release-<arch>/gce.txt: the GCE image "published" (plume release)
# The fake plume checks that each credential decodes (base64) to something, and prints what it publishes.
set -eu

. sdk_container/.repo/manifests/version.txt
channel=${1:?usage: mini_plume.sh CHANNEL}
regions="us-east-1 eu-central-1"

decoded() {
    # decoded VAR: true when $VAR is set, not empty and valid base64 of something
    eval "value=\${$1?$1 is not set}"
    [ -n "${value}" ] || return 1
    [ -n "$(printf '%s' "${value}" | base64 -d 2>/dev/null)" ] || {
        echo "plume: $1 is not base64" >&2
        exit 1
    }
}

aws=""
if decoded AWS_CREDENTIALS && decoded AWS_MARKETPLACE_CREDENTIALS && decoded AWS_CLOUDFORMATION_CREDENTIALS; then
    aws=x
fi
: "${AWS_MARKETPLACE_ARN?AWS_MARKETPLACE_ARN is not set}"
gce=""
if decoded GCP_JSON_KEY && decoded GOOGLE_RELEASE_CREDENTIALS; then
    gce=x
fi

for arch in amd64 arm64; do
    rm -rf "aws-${arch}" "release-${arch}"
    mkdir -p "aws-${arch}" "release-${arch}"
    if [ -n "${aws}" ]; then
        json="aws-${arch}/flatcar_production_ami_all.json"
        txt="aws-${arch}/flatcar_production_ami_hvm.txt"
        printf '{"amis": [' >"${json}"
        : >"${txt}"
        sep=""
        for region in ${regions}; do
            ami="ami-$(printf '%s %s %s' "${FLATCAR_VERSION}" "${arch}" "${region}" | sha256sum | cut -c1-17)"
            printf '%s{"name": "%s", "hvm": "%s"}' "${sep}" "${region}" "${ami}" >>"${json}"
            echo "${region}=${ami}" >>"${txt}"
            sep=", "
            echo "plume: published ${ami} in ${region} (${channel} ${FLATCAR_VERSION} ${arch}-usr)"
        done
        echo ']}' >>"${json}"
    else
        echo "plume: no credentials for aws: not publishing ${arch}-usr"
    fi
    if [ -n "${gce}" ]; then
        image="flatcar-${channel}-$(echo "${FLATCAR_VERSION}" | tr '.+' '--')-${arch}"
        echo "${image}" >"release-${arch}/gce.txt"
        echo "plume: published GCE image ${image}"
    else
        echo "plume: no credentials for gce: not publishing ${arch}-usr"
    fi
done
