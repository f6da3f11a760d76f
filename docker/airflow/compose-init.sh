#!/bin/bash
# airflow-init of the compose stack (docker-compose.airflow.yml, docs/compose.md): runs as root once per
# `up`, before the other Airflow services start; every part is idempotent.
#
# INPUTS:  FLATCAR_ROOT            the build hosts' root directory (mounted at the same path as on the
#                                  Docker host); FLATCAR_AIRFLOW_CONFIG the configuration file
#          FLATCAR_DEMO            true: make the demo origin, images and configuration (a configuration
#                                  that is not the demo's is left alone); false: the configuration must exist
#          FLATCAR_RUNNER_IMAGE, FLATCAR_NETWORK   the demo's runner image and the stack's network
#          AIRFLOW_UID             the Airflow services' user; AIRFLOW_ADMIN_USER, AIRFLOW_ADMIN_PASSWORD
#          AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE   where the API server reads the password
#          /var/lib/flatcar-buildcache  the build cache's state (read-only): its keys, CA and settings
# OUTPUTS: the migrated database, the admin password file, the build cache connection (the config's
#          buildcache_conn_id), the pools; with the demo: ROOT/demo/scripts.git, the seed images, the config.
set -euo pipefail

say() { printf 'airflow-init: %s\n' "$*"; }
fail() {
    say "ERROR: $*" >&2
    exit 1
}

root=${FLATCAR_ROOT:?FLATCAR_ROOT is not set}
config=${FLATCAR_AIRFLOW_CONFIG:?FLATCAR_AIRFLOW_CONFIG is not set}
uid=${AIRFLOW_UID:-50000}
state=/var/lib/flatcar-buildcache
[[ $root == /* ]] || fail "FLATCAR_ROOT=$root must be an absolute path (the same on the Docker host)"
[[ -f $state/settings.json ]] || fail "no build cache state in $state: is the buildcache service healthy?"

say "Airflow $(airflow version 2>/dev/null | tail -n 1), flatcar-airflow $(python -c 'import flatcar_airflow as f; print(f.__version__)')"
install -d -m 0755 "$root"
chown "$uid:0" "$root"
install -d -o "$uid" -g 0 -m 0775 /opt/airflow/logs "$(dirname "$AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE")"

say "migrating the database"
airflow db migrate >/dev/null

say "admin user ${AIRFLOW_ADMIN_USER:-admin} (SimpleAuthManager)"
python - <<'EOF'
import json
import os

path = os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
password = os.environ.get("AIRFLOW_ADMIN_PASSWORD", "")
if not password:
    raise SystemExit("airflow-init: AIRFLOW_ADMIN_PASSWORD is empty")
fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
with os.fdopen(fd, "w") as handle:
    json.dump({os.environ.get("AIRFLOW_ADMIN_USER") or "admin": password}, handle)
    handle.write("\n")
os.chown(path + ".tmp", int(os.environ.get("AIRFLOW_UID") or 50000), 0)
os.replace(path + ".tmp", path)
EOF

if [[ ${FLATCAR_DEMO:-true} == true ]]; then
    say "demo profile: origin, seed images and configuration (runner image ${FLATCAR_RUNNER_IMAGE})"
    flatcar-airflow demo setup --root "$root" --config "$config" \
        --runner-image "${FLATCAR_RUNNER_IMAGE:?}" --network "${FLATCAR_NETWORK:?}" >/tmp/demo.json ||
        fail "the demo setup failed: $(cat /tmp/demo.json)"
    chown -R "$uid:0" "$root/demo"
    python -c 'import json; r = json.load(open("/tmp/demo.json")); print("airflow-init:", "config", r["config"], "(demo)" if r["config_is_demo"] else "(yours, kept)", "images made:", r["images_made"] or "none")'
elif [[ ! -f $config ]]; then
    fail "FLATCAR_DEMO is not true and there is no configuration $config: write it (docs/configuration.md)"
fi
python -c 'from flatcar_airflow.config import load_config; load_config()' ||
    fail "the configuration $config is not valid"

conn_id=$(python -c 'from flatcar_airflow.config import load_config; print(load_config().buildcache_conn_id)')
say "build cache connection $conn_id"
python -m flatcar_airflow.buildcache_server --state "$state" connection --create "$conn_id" >/dev/null

say "pools"
flatcar-airflow pools --config "$config" >/dev/null

chown -R "$uid:0" /opt/airflow/logs
say "done"
