# Miniature Flatcar scripts repository (flatcar-airflow test fixture).
#
# Vendor test helper, sourced (POSIX sh) by ci-automation/vendor-testing/<image>.sh inside the
# mantle container, with the arguments test.sh passes:
#   1 - top-level tests directory (__TESTS__: git_version, git_channel, first_run)
#   2 - the vendor's work directory (__TESTS__/<image>)
#   3 - architecture, 4 - version (FLATCAR_VERSION), 5 - TAP file to write (name in the work dir)
#   6... - test names or patterns
# Sets CIA_VERNUM, CIA_ARCH, CIA_TAPFILE (absolute), CIA_CHANNEL ("developer" becomes "alpha"),
# CIA_TESTSCRIPT, CIA_GIT_VERSION, CIA_BUILD_TYPE (release or developer), CIA_FIRST_RUN (1 or 0),
# changes into the work directory and leaves the test patterns in "$@".
#
# mini_kola_run runs the miniature's fake kola: it "boots" the vendor image by checking that it was
# downloaded and carries FLATCAR_RELEASE_VERSION=<version>, then reports each selected test of
# MINI_KOLA_TESTS in TAP. Knobs (environment, passed into the container by test.sh):
#   MINI_FLAKY_TESTS=<test>[,<test>...]   these tests fail on the first run only
#   MINI_BROKEN_TESTS=<test>[,<test>...]  these tests always fail

# shellcheck shell=sh

ciavts_main_work_dir=$1
ciavts_work_dir=$2
ciavts_arch=$3
ciavts_vernum=$4
ciavts_tapfile=$5
shift 5

. ci-automation/mini_vendor_table.sh

mkdir -p "${ciavts_work_dir}"
CIA_VERNUM=${ciavts_vernum}
CIA_ARCH=${ciavts_arch}
CIA_TESTSCRIPT=$(basename "$0")
CIA_GIT_VERSION=$(cat "${ciavts_main_work_dir}/git_version" 2>/dev/null || echo unknown)
CIA_CHANNEL=$(cat "${ciavts_main_work_dir}/git_channel" 2>/dev/null || echo developer)
if [ "${CIA_CHANNEL}" = developer ]; then
    CIA_CHANNEL=alpha
fi
case ${CIA_VERNUM} in
    *+*) CIA_BUILD_TYPE=developer ;;
    *) CIA_BUILD_TYPE=release ;;
esac
CIA_FIRST_RUN=0
if [ -f "${ciavts_main_work_dir}/first_run" ]; then
    CIA_FIRST_RUN=1
fi
case ${ciavts_tapfile} in
    /*) CIA_TAPFILE=${ciavts_tapfile} ;;
    *) CIA_TAPFILE="${PWD}/${ciavts_work_dir}/${ciavts_tapfile}" ;;
esac
export CIA_VERNUM CIA_ARCH CIA_TAPFILE CIA_CHANNEL CIA_TESTSCRIPT CIA_GIT_VERSION CIA_BUILD_TYPE CIA_FIRST_RUN
cd "${ciavts_work_dir}" || exit 1

# Stops test.sh's re-runs (for failures a re-run cannot fix).
break_retest_cycle() {
    if [ "$(basename "$(dirname "${PWD}")")" != "${TEST_WORK_DIR:-__TESTS__}" ]; then
        echo "Not breaking retest cycle, expected test work dir to be a parent directory" >&2
        return 0
    fi
    touch ../break_retests
}

mini_listed() {
    case ",$2," in
        *",$1,"*) return 0 ;;
    esac
    return 1
}

mini_kola_run() {
    vendor=${CIA_TESTSCRIPT%.sh}
    if [ "${vendor}" = qemu_update ]; then
        tests=${MINI_KOLA_TESTS:-cl.update.payload}
    else
        tests=${MINI_KOLA_TESTS:-cl.basic cl.network.ping cl.update.payload}
    fi
    if ! files=$(mini_vendor_files "${vendor}" "${CIA_ARCH}"); then
        printf '1..1\nnot ok - all %s tests\n  ---\n  ERROR: no tests for image %s.\n  ...\n' \
            "${vendor}" "${vendor}" >"${CIA_TAPFILE}"
        break_retest_cycle
        exit 1
    fi
    if [ "${files}" = unsupported ]; then
        {
            echo "1..1"
            echo "not ok - all ${vendor} tests"
            echo "  ---"
            echo "  ERROR: ${CIA_ARCH} tests not supported on ${vendor}."
            echo "  ..."
        } >"${CIA_TAPFILE}"
        echo "ERROR: ${CIA_ARCH} tests not supported on ${vendor}."
        break_retest_cycle
        exit 1
    fi

    boot_error=""
    for file in ${files}; do
        [ -f "${file}" ] || boot_error="${boot_error}${file} was not downloaded; "
    done
    image=$(echo "${files}" | head -n1)
    if [ -z "${boot_error}" ]; then
        case ${image} in
            *.bz2) reader="bzip2 -dc" ;;
            *.gz) reader="gzip -dc" ;;
            *) reader="cat" ;;
        esac
        # (NUL bytes of the tar archives end lines for busybox grep)
        if ! ${reader} "${image}" | tr '\000' '\n' | grep -qxF "FLATCAR_RELEASE_VERSION=${CIA_VERNUM}"; then
            boot_error="${image} does not boot Flatcar ${CIA_VERNUM}"
        fi
    fi

    selected=""
    for test_name in ${tests}; do
        for pattern in "$@"; do
            # shellcheck disable=SC2254
            case ${test_name} in
                ${pattern})
                    selected="${selected} ${test_name}"
                    break
                    ;;
            esac
        done
    done

    kola_dir="_kola_temp/${vendor}-$(basename "${CIA_TAPFILE}" .tap)"
    mkdir -p "${kola_dir}"
    count=0
    for test_name in ${selected}; do
        count=$((count + 1))
    done
    failures=0
    n=0
    {
        echo "TAP version 13"
        echo "1..${count}"
    } >"${CIA_TAPFILE}"
    for test_name in ${selected}; do
        n=$((n + 1))
        error=""
        if [ -n "${boot_error}" ]; then
            error=${boot_error}
        elif mini_listed "${test_name}" "${MINI_BROKEN_TESTS:-}"; then
            error="${test_name} failed as asked (MINI_BROKEN_TESTS)"
        elif [ "${CIA_FIRST_RUN}" = 1 ] && mini_listed "${test_name}" "${MINI_FLAKY_TESTS:-}"; then
            error="${test_name} failed on the first run as asked (MINI_FLAKY_TESTS)"
        fi
        mkdir -p "${kola_dir}/${test_name}"
        echo "=== RUN   ${test_name}"
        if [ -z "${error}" ]; then
            echo "ok ${n} - ${test_name}" >>"${CIA_TAPFILE}"
            echo "${test_name}: booted Flatcar ${CIA_VERNUM} (${CIA_ARCH}, ${vendor}) and passed" \
                >"${kola_dir}/${test_name}/console.txt"
            echo "--- PASS: ${test_name} (0.00s)"
        else
            failures=$((failures + 1))
            {
                echo "not ok ${n} - ${test_name}"
                echo "  ---"
                echo "  Error: \"${error}\""
                echo "  ..."
            } >>"${CIA_TAPFILE}"
            echo "${test_name}: ${error}" >"${kola_dir}/${test_name}/console.txt"
            echo "--- FAIL: ${test_name} (0.00s)"
            echo "        ${error}"
        fi
    done
    if [ "${failures}" -gt 0 ]; then
        echo "FAIL, output in ${kola_dir}"
        exit 1
    fi
    echo "PASS, output in ${kola_dir}"
}
