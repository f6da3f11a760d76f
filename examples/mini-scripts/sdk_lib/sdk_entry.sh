#!/bin/sh
#
# Miniature Flatcar scripts repository (flatcar-airflow test fixture).
#
# Entry point of commands run by ./run_sdk_container inside an SDK container (POSIX sh: the
# miniature's SDK images are busybox-based). Loads the variables run_sdk_container passed in
# sdk_container/.sdkenv, makes /home/sdk/trunk point at the mounted work tree like in the Flatcar
# SDK, and runs the command from the scripts directory.
set -eu

if [ -f /mnt/host/source/.sdkenv ]; then
    # shellcheck source=/dev/null
    . /mnt/host/source/.sdkenv
fi
if [ ! -e /home/sdk/trunk ]; then
    mkdir -p /home/sdk
    ln -s /mnt/host/source /home/sdk/trunk
fi
cd /mnt/host/source/src/scripts
exec "$@"
