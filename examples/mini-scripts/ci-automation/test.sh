#!/bin/bash
#
# Miniature Flatcar scripts repository (flatcar-airflow test fixture).
#
# >>> This file is supposed to be SOURCED from the repository ROOT. <<<
#
# test_run() should be called w/ the positional INPUT parameters below.

# Test scenarios runner stub.
#   This script will run test scenarios for a single image type.
#   Tests will be started inside the mantle container.
#   This script is generic and will use a vendor-specific test runner from
#   "ci-automation/vendor-testing/<image>.sh".
#
# PREREQUISITES:
#
#   1. SDK version and OS image version are recorded in sdk_container/.repo/manifests/version.txt
#   2. Scripts repo version tag of OS image version to be built is available and checked out.
#   3. Mantle container image name and tag is stored in sdk_container/.repo/manifests/mantle-container
#      (or MANTLE_REF is set); the image must be present locally (it is not pulled).
#   4. Vendor image to run tests for is available on buildcache ( images/[ARCH]/[FLATCAR_VERSION]/ ).
#
# INPUT:
#
#   1. Architecture (ARCH) of the TARGET vm images ("arm64", "amd64").
#   2. Image type to be tested: the name of a script in ci-automation/vendor-testing/, e.g.
#       qemu, qemu_uefi, qemu_update, aws, azure, gce, vmware.
#
# OPTIONAL INPUT:
#
#   3. List of tests / test patterns. Defaults to "*" (all tests).
#
#   MAX_RETRIES. Environment variable. Number of re-runs to overcome transient failures.
#       Defaults to 20.
#   PARALLEL_TESTS. Environment variable. Accepted for compatibility (the fake kola is serial).
#   MANTLE_REF. Environment variable. Overrides the mantle container image to run the tests with.
#   SKIP_COPY_TO_BINCACHE. Environment variable. "1": do not publish the results to buildcache.
#   TEST_WORK_DIR. Environment variable. Defaults to "__TESTS__".
#
# OUTPUT:
#
#   1. 2 merged TAP reports with all test runs, in the repository root:
#        - results-[IMAGE].{tap,md}, a "summary" report which contains error messages only for
#          tests which never succeeded.
#        - results-[IMAGE]-detailed.{tap,md}, a "detailed" report which also contains error
#          messages of transient failures which succeeded after re-runs.
#        These reports are updated after each (re-)run, so the job can be aborted at any point.
#   2. All intermediate kola TAP reports (__TESTS__/[IMAGE]/results-run-[N].tap), kola output
#        (_kola_temp) and the merged reports, published to buildcache at testing/[VERSION]/[ARCH]/[IMAGE]/
#   3. "./ci-cleanup.sh" with commands to clean up temporary build resources,
#        to be run after this step finishes / when this step is aborted.
#   The function returns 1 unless every test succeeded at least once.

function __escape_all() {
    local -n escape_all_out=${1}
    shift
    escape_all_out=()
    local arg escaped
    for arg in "$@"; do
        printf -v escaped '%q' "${arg}"
        escape_all_out+=("${escaped}")
    done
}
# --

function test_run() {
    # Run a subshell, so the traps, environment changes and global
    # variables are not spilled into the caller.
    (
        set -euo pipefail

        _test_run_impl "${@}"
    )
}
# --

function _test_run_impl() {
    local arch=${1}
    shift
    local image=${1}
    shift
    if [[ $# -eq 0 ]]; then
        set -- '*'
    fi

    local retries=${MAX_RETRIES:-20}
    local skip_copy_to_bincache=${SKIP_COPY_TO_BINCACHE:-0}

    source ci-automation/ci_automation_common.sh
    source sdk_lib/sdk_container_common.sh
    source ci-automation/mini_vendor_table.sh

    source sdk_container/.repo/manifests/version.txt
    local vernum=${FLATCAR_VERSION}
    local docker_vernum
    docker_vernum=$(vernum_to_docker_image_version "${vernum}")

    local work_dir=${TEST_WORK_DIR}
    local tests_dir="${work_dir}/${image}"
    mkdir -p "${tests_dir}"
    get_git_version >"${work_dir}/git_version"
    get_git_channel >"${work_dir}/git_channel"

    local container_name="flatcar-tests-${arch}-${docker_vernum}-${image}"
    local mantle_ref=${MANTLE_REF:-$(<sdk_container/.repo/manifests/mantle-container)}

    if [[ ! -x ci-automation/vendor-testing/${image}.sh ]]; then
        echo "ERROR: there is no test runner ci-automation/vendor-testing/${image}.sh for image '${image}'" >&2
        return 1
    fi
    ci_cleanup_add "docker rm -f '${container_name}'"
    mini_step_knobs test_run "${container_name}" "${mantle_ref}" "${arch}"

    # What the vendor tests need from the build cache, downloaded here (the miniature's mantle
    # container has no TLS client). Nothing is needed when the arch cannot be tested.
    local files file
    files=$(mini_vendor_files "${image}" "${arch}") || files=""
    if [[ ${files} != unsupported ]]; then
        for file in ${files}; do
            [[ -f ${tests_dir}/${file} ]] && continue
            if ! check_bincache_images_existence "https://${BUILDCACHE_SERVER}/images/${arch}/${vernum}/${file}"; then
                echo "ERROR: images/${arch}/${vernum}/${file} is not in the build cache: the ${image} image of ${vernum} (${arch}) was not built" >&2
                return 1
            fi
            copy_from_buildcache "images/${arch}/${vernum}/${file}" "${tests_dir}"
        done
    fi

    local tap_merged_summary="results-${image}"
    local tap_merged_detailed="results-${image}-detailed"
    local retry="" success=false print_give_up=true
    local -a failed_tests=()
    local -a common_args_escaped=() tests_escaped=()
    __escape_all common_args_escaped "${work_dir}" "${tests_dir}" "${arch}" "${vernum}"
    __escape_all tests_escaped "$@"
    local image_escaped
    printf -v image_escaped '%q' "${image}"

    touch "${work_dir}/first_run"
    for retry in $(seq "${retries}"); do
        local tapfile="results-run-${retry}.tap"
        local failfile="failed-run-${retry}.txt"

        # Tests are flaky: the exit code is ignored, the TAP report decides.
        set +e
        touch sdk_container/.env
        "${docker}" run --pull never --rm --name="${container_name}" --network none \
            -w /work -v "${PWD}":/work -e MINI_FLAKY_TESTS -e MINI_BROKEN_TESTS -e MINI_KOLA_TESTS \
            "${mantle_ref}" \
            sh -c ". sdk_container/.env && ci-automation/vendor-testing/${image_escaped}.sh ${common_args_escaped[*]} ${tapfile} ${tests_escaped[*]}"
        set -e
        rm -f "${work_dir}/first_run"

        "${docker}" run --pull never --rm --name="${container_name}" --network none \
            -w /work -v "${PWD}":/work "${mantle_ref}" \
            ci-automation/test_update_reruns.sh \
            "${arch}" "${vernum}" "${image}" "${retry}" \
            "${tests_dir}/${tapfile}" \
            "${tests_dir}/${failfile}" \
            "${tap_merged_summary}" \
            "${tap_merged_detailed}"

        readarray -t failed_tests <"${tests_dir}/${failfile}"
        if [[ ${#failed_tests[@]} -eq 0 ]]; then
            echo "########### All tests succeeded. ###########"
            success=true
            print_give_up=false
            break
        fi

        if retest_cycle_broken; then
            echo "########### Test cycle requested to break ###########"
            echo "Failed tests:"
            printf '%s\n' "${failed_tests[@]}"
            echo "-----------"
            print_give_up=false
            break
        fi

        echo "########### Some tests failed and will be re-run (${retry} / ${retries}). ###########"
        echo "Failed tests:"
        printf '%s\n' "${failed_tests[@]}"
        echo "-----------"
        __escape_all tests_escaped "${failed_tests[@]}"
    done

    if ${print_give_up}; then
        echo "########### All re-runs exhausted (${retries}). Giving up. ###########"
    fi

    if [[ ${skip_copy_to_bincache} -eq 0 ]]; then
        copy_to_buildcache "testing/${vernum}/${arch}/${image}" "${tests_dir}/_kola_temp"
        copy_to_buildcache "testing/${vernum}/${arch}/${image}" "${tests_dir}/"*.tap
        copy_to_buildcache "testing/${vernum}/${arch}/${image}" "${tap_merged_summary}"*
        copy_to_buildcache "testing/${vernum}/${arch}/${image}" "${tap_merged_detailed}"*
    fi
    if ! ${success}; then
        return 1
    fi
}
# --
