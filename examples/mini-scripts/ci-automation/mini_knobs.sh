# Miniature Flatcar scripts repository (flatcar-airflow test fixture).
#
# Test knobs: environment variables that make a step misbehave on purpose, so an orchestrator's
# failure, kill and heartbeat handling can be tested. They do not exist in the Flatcar scripts.
#
#   MINI_FAIL_STEP=<fn>[@<arch>][,...]  the step prints "mini-scripts: failing <fn> as asked" (for
#                                        <fn>@<arch>: "... failing <fn> on <arch> as asked") and exits 1
#   MINI_FAIL_ONCE=<fn>[@<arch>][,...]   like MINI_FAIL_STEP, but only the first time: the failure is
#                                        recorded as the directory <MINI_STATE_DIR>/failed-once/<fn>[@<arch>]
#                                        (mkdir, so of concurrent runs exactly one fails); once it exists
#                                        the step runs normally. Without MINI_STATE_DIR the step fails with
#                                        "mini-scripts: MINI_FAIL_ONCE needs MINI_STATE_DIR"
#   MINI_HANG_STEP=<fn>[,<fn>...]        the step starts its container (recorded in ./ci-cleanup.sh) and a
#                                        child process, prints "mini-scripts: hanging <fn>" and waits forever
#   MINI_SLOW_STEP=<fn>:<seconds>[,...]  the step sleeps that long first, printing nothing
#   MINI_CURL_RETRY_MAX_TIME=<seconds>   how long the reads from the build cache retry a connection
#                                        problem (ci_automation_common.sh; default 60 s, as the scripts)
#
# <fn> is the public step function name (sdk_bootstrap, sdk_container_build, packages_tag,
# packages_build, push_packages, image_build, sbsign_image, vm_build, test_run, image_changes,
# release_build). <fn>@<arch> names one
# architecture's run of a per-arch step (packages_build@arm64: arm64 fails, amd64 builds); it never
# matches the steps that take no arch (sdk_bootstrap, sdk_container_build, packages_tag).
# MINI_FLAKY_TESTS and MINI_BROKEN_TESTS (the fake kola's test results) are read by
# ci-automation/vendor_test.sh.

# shellcheck shell=bash

# mini_knob_lists NAME LIST: true when the comma-separated LIST holds NAME.
function mini_knob_lists() {
    [[ ",${2}," == *",${1},"* ]]
}
# --

# mini_knob_matches FUNCTION ARCH LIST: true when the comma-separated LIST names FUNCTION, or
# FUNCTION@ARCH when ARCH is not empty; prints the matching entry.
function mini_knob_matches() {
    local fn=${1}
    local arch=${2}
    local entry
    local -a entries=()
    IFS=, read -r -a entries <<<"${3}"
    for entry in "${entries[@]}"; do
        if [[ ${entry} == "${fn}" || (-n ${arch} && ${entry} == "${fn}@${arch}") ]]; then
            echo "${entry}"
            return 0
        fi
    done
    return 1
}
# --

# mini_fail_as_asked ENTRY: the failure message of a MINI_FAIL_STEP or MINI_FAIL_ONCE entry, exit 1.
function mini_fail_as_asked() {
    local entry=${1}
    if [[ ${entry} == *@* ]]; then
        echo "mini-scripts: failing ${entry%@*} on ${entry#*@} as asked"
    else
        echo "mini-scripts: failing ${entry} as asked"
    fi
    exit 1
}
# --

# mini_step_knobs FUNCTION CONTAINER [IMAGE [ARCH]]
# Called by every step once it knows the name of its (main) container. CONTAINER is the name a hanging
# step gives the container it starts from IMAGE (falling back to the mantle image when IMAGE is empty
# or not present locally). ARCH is the architecture of a per-arch step (empty for the others).
function mini_step_knobs() {
    local fn=${1}
    local container=${2}
    local image=${3:-}
    local arch=${4:-}

    local entry
    local -a entries=()
    IFS=, read -r -a entries <<<"${MINI_SLOW_STEP:-}"
    for entry in "${entries[@]}"; do
        if [[ ${entry%%:*} == "${fn}" && ${entry} == *:* ]]; then
            sleep "${entry#*:}"
        fi
    done

    local matched
    if matched=$(mini_knob_matches "${fn}" "${arch}" "${MINI_FAIL_STEP:-}"); then
        mini_fail_as_asked "${matched}"
    fi

    if matched=$(mini_knob_matches "${fn}" "${arch}" "${MINI_FAIL_ONCE:-}"); then
        if [[ -z ${MINI_STATE_DIR:-} ]]; then
            echo "mini-scripts: MINI_FAIL_ONCE needs MINI_STATE_DIR"
            exit 1
        fi
        mkdir -p "${MINI_STATE_DIR}/failed-once"
        if mkdir "${MINI_STATE_DIR}/failed-once/${matched}" 2>/dev/null; then
            mini_fail_as_asked "${matched}"
        fi
    fi

    if mini_knob_lists "${fn}" "${MINI_HANG_STEP:-}"; then
        if [[ -z ${image} ]] || ! "${docker:-docker}" image inspect "${image}" >/dev/null 2>&1; then
            image=$(<sdk_container/.repo/manifests/mantle-container)
        fi
        ci_cleanup_add "'${docker:-docker}' container rm -f '${container}'"
        if ! "${docker:-docker}" run -d --name "${container}" --network none "${image}" \
            sleep 2147483647 >/dev/null; then
            echo "mini-scripts: could not start the container ${container} from ${image}" >&2
        fi
        sleep 2147483647 &
        local child=$!
        echo "mini-scripts: hanging ${fn}"
        echo "mini-scripts: hanging with child process ${child} and container ${container}"
        wait "${child}"
        exit 1
    fi
}
# --
