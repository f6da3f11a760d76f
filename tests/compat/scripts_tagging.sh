# A small re-statement, written for these tests, of how the Flatcar scripts repo versions and tags a
# build (sdk_lib/sdk_container_common.sh: create_versionfile; ci-automation/ci_automation_common.sh:
# update_and_push_version, update_submodule). It restates the observable behaviour only, so that the
# tests can check that flatcar-airflow tags the same tree and that the scripts then reuse our tag.
#
# Source it from the root of a scripts checkout. SCRIPTS_ERA=seed adds the seed era's submodule pins
# (coreos-overlay and portage-stable under sdk_container/src/third_party/) to the version commit and
# commits without a sign-off, as the seed era did; SCRIPTS_SIGNOFF=0 leaves out the sign-off in today's
# layout too (the years between the seed era and July 2025, when the scripts started to sign off).

: "${CI_GIT_AUTHOR:=flatcar-ci}"
: "${CI_GIT_EMAIL:=infra+ci@flatcar-linux.org}"
VERSIONFILE=sdk_container/.repo/manifests/version.txt

# "alpha-1.2.3-foo", "1.2.3-foo" or "1.2.3+foo" -> "1.2.3"
compat_number() {
    sed -E -n 's/^([a-z]+-)?([0-9.]+).*/\2/p' <<<"$1" | head -n 1
}

# ... -> "foo" (empty for an official version)
compat_build_id() {
    sed -E -n 's/^([a-z]+-)?[0-9.]+[-+](.*)$/\2/p' <<<"$1" | head -n 1
}

# ... -> "1.2.3+foo" or "1.2.3"
compat_plain() {
    local id
    id=$(compat_build_id "$1")
    if [[ -n $id ]]; then echo "$(compat_number "$1")+${id}"; else compat_number "$1"; fi
}

# create_versionfile SDK_VERSION [OS_VERSION]
create_versionfile() {
    local sdk=$1 os=${2:-$1}
    printf 'FLATCAR_VERSION=%s\nFLATCAR_VERSION_ID=%s\nFLATCAR_BUILD_ID="%s"\nFLATCAR_SDK_VERSION=%s\n' \
        "$(compat_plain "$os")" "$(compat_number "$os")" "$(compat_build_id "$os")" "$(compat_plain "$sdk")" \
        >"$VERSIONFILE"
}

# update_submodule NAME REF: check out REF (a tag, usually the version) in the submodule
update_submodule() {
    (
        cd "sdk_container/src/third_party/$1" &&
            git fetch --quiet --all --tags &&
            git checkout --quiet "$2"
    )
}

# update_and_push_version VERSION [TARGET_BRANCH]
update_and_push_version() {
    local version=$1 branch=${2:-} rc=0
    git config user.name >/dev/null || git config user.name "$CI_GIT_AUTHOR"
    git config user.email >/dev/null || git config user.email "$CI_GIT_EMAIL"
    if [[ ${SCRIPTS_ERA:-} == seed ]]; then
        git add sdk_container/src/third_party/coreos-overlay sdk_container/src/third_party/portage-stable
    fi
    git add "$VERSIONFILE"
    local -a signoff=(--signoff)
    if [[ ${SCRIPTS_ERA:-} == seed || ${SCRIPTS_SIGNOFF:-1} == 0 ]]; then
        signoff=()
    fi
    git commit --quiet "${signoff[@]}" --allow-empty -m "New version: ${version}"
    git fetch --quiet --all --tags --force
    git diff --quiet --exit-code "$version" 2>/dev/null || rc=$?
    case $rc in
        0)
            echo "Reusing existing tag" >&2
            git checkout --quiet --force "$version"
            return 0
            ;;
        1)
            echo "Remote tag exists already and is not equal" >&2
            return 1
            ;;
        127 | 128) ;;
        *)
            echo "Error: unexpected git diff exit code $rc" >&2
            return 1
            ;;
    esac
    git tag --force "$version"
    if [[ -n $branch ]]; then
        git push --quiet origin "HEAD:${branch}"
    fi
    git push --quiet origin "$version"
}
