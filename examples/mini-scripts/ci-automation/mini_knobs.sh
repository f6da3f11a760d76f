# Miniature Flatcar scripts repository (flatcar-airflow test fixture).
#
# Test knobs: environment variables that make a step misbehave on purpose, so an orchestrator's
# failure, kill and heartbeat handling can be tested. They do not exist in the Flatcar scripts.
#
#   MINI_FAIL_STEP=<fn>[,<fn>...]        the step prints "mini-scripts: failing <fn> as asked" and exits 1
#   MINI_HANG_STEP=<fn>[,<fn>...]        the step starts its container (recorded in ./ci-cleanup.sh) and a
#                                        child process, prints "mini-scripts: hanging <fn>" and waits forever
#   MINI_SLOW_STEP=<fn>:<seconds>[,...]  the step sleeps that long first, printing nothing
#
# <fn> is the public step function name (sdk_bootstrap, sdk_container_build, packages_tag,
# packages_build, push_packages, image_build, vm_build, test_run, image_changes).
# MINI_FLAKY_TESTS and MINI_BROKEN_TESTS (the fake kola's test results) are read by
# ci-automation/vendor_test.sh.

# shellcheck shell=bash

# mini_knob_lists NAME LIST: true when the comma-separated LIST holds NAME.
function mini_knob_lists() {
    [[ ",${2}," == *",${1},"* ]]
}
# --

# mini_step_knobs FUNCTION CONTAINER [IMAGE]
# Called by every step once it knows the name of its (main) container. CONTAINER is the name a hanging
# step gives the container it starts from IMAGE (falling back to the mantle image when IMAGE is empty
# or not present locally).
function mini_step_knobs() {
    local fn=${1}
    local container=${2}
    local image=${3:-}

    local entry
    local -a entries=()
    IFS=, read -r -a entries <<<"${MINI_SLOW_STEP:-}"
    for entry in "${entries[@]}"; do
        if [[ ${entry%%:*} == "${fn}" && ${entry} == *:* ]]; then
            sleep "${entry#*:}"
        fi
    done

    if mini_knob_lists "${fn}" "${MINI_FAIL_STEP:-}"; then
        echo "mini-scripts: failing ${fn} as asked"
        exit 1
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
