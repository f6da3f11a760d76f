#!/bin/sh
#
# Miniature Flatcar scripts repository (flatcar-airflow test fixture).
#
# Helper of test.sh, run in the mantle container after each test run: adds the run's TAP report to
# the results, writes the tests that still never succeeded to FAILFILE (test.sh re-runs those) and
# regenerates the merged summary and detailed reports (MERGED_SUMMARY.{tap,md},
# MERGED_DETAILED.{tap,md}).
#
# Usage: test_update_reruns.sh ARCH VERNUM IMAGE RETRY TAPFILE FAILFILE MERGED_SUMMARY MERGED_DETAILED
set -eu

arch=$1
vernum=$2
image=$3
retry=$4
tapfile=$5
failfile=$6
merged_summary=$7
merged_detailed=$8

. ci-automation/tapfile_helper_lib.sh

tap_ingest_tapfile "${tapfile}" "${image}" "${retry}"
tap_failed_tests_for_vendor "${image}" >"${failfile}"

for format in tap md; do
    tap_generate_report "${arch}" "${vernum}" "${format}" >"${merged_summary}.${format}"
    tap_generate_report "${arch}" "${vernum}" "${format}" "true" >"${merged_detailed}.${format}"
done
