#!/bin/sh
# Miniature Flatcar scripts repository (flatcar-airflow test fixture).
#
# Test execution script for the stackit vendor image, run in the mantle container by
# ci-automation/test.sh (see ci-automation/vendor_test.sh for the arguments and the fake kola).
set -eu

. ci-automation/vendor_test.sh

mini_kola_run "$@"
