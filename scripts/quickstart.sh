#!/usr/bin/env bash
# flatcar-airflow's main job on this machine: Airflow 3.3 with the Flatcar pipelines, a local build cache
# and (without --config) a demo build of the miniature scripts repository. Fresh Debian 12 or 13, as root
# (or a user with sudo and docker; the build cache serves HTTPS on port 443, which needs root).
#
#   bash scripts/quickstart.sh [start] [--config FILE] [--port 8080] [--host 127.0.0.1] [--no-demo-build]
#   bash scripts/quickstart.sh stop | status
#
# start installs what is missing (the same code as the tests: scripts/lib/setup.sh), then runs
# `flatcar-airflow quickstart` in the foreground; Ctrl-C or `quickstart.sh stop` stops everything it
# started. State: $FLATCAR_AIRFLOW_HOME, else ~/.local/share/flatcar-airflow (docs/quickstart.md).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

case ${1:-start} in
stop | status)
    exec .venv/bin/flatcar-airflow quickstart "$@"
    ;;
esac

FA_WHO=quickstart
# shellcheck source=scripts/lib/setup.sh
source scripts/lib/setup.sh
fa_install_debs "${FA_DEBS[@]}"
fa_start_dockerd
# --inexact: a developer's venv keeps its test tools.
FA_SYNC_INEXACT=1 fa_sync_venv
exec .venv/bin/flatcar-airflow quickstart "$@"
