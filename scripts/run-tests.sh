#!/usr/bin/env bash
# Runs flatcar-airflow's checks and test suite on a fresh Debian 12 machine (as root) or a developer's.
#
# It installs what the tests need first: Debian packages that are missing, uv, and the locked Python
# dependencies into .venv (uv.lock; nothing is resolved anew). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

missing=()
for tool in git bash; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
    echo "run-tests: installing Debian packages: ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

python=${PYTHON:-}
if [[ -z $python ]]; then
    for candidate in python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1; then python=$candidate; break; fi
    done
fi
if ! "$python" -m uv --version >/dev/null 2>&1; then
    echo "run-tests: installing uv" >&2
    "$python" -m pip install --quiet --disable-pip-version-check uv
fi

export UV_PYTHON_DOWNLOADS=never
"$python" -m uv sync --quiet --frozen --extra test --python "$python"

.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/pytest "$@"
