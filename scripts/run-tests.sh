#!/usr/bin/env bash
# Runs flatcar-airflow's checks and test suite on a fresh Debian 12 machine (as root) or a developer's.
#
# It installs what the tests need first, with the same code as the quickstart (scripts/lib/setup.sh):
# Debian packages that are missing, uv, and the locked Python dependencies into .venv (uv.lock; nothing is
# resolved anew); and it starts dockerd when `docker info` fails. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

FA_WHO=run-tests
# shellcheck source=scripts/lib/setup.sh
source scripts/lib/setup.sh

# The product's Debian packages (scripts/lib/setup.sh), and what only the tests use: debootstrap (the
# Debian base of the test images); redis-server and postgresql (the Celery test's broker and database);
# chromium, the headless browser the builds page's tests drive with playwright (Debian's build: the tests
# never download a browser) and fonts-liberation, the fonts of its screenshots.
fa_install_debs "${FA_DEBS[@]}" debootstrap redis-server postgresql docker-compose chromium fonts-liberation
fa_start_dockerd
fa_sync_venv test celery

.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/pytest "$@"
