# Miniature Flatcar scripts repository (flatcar-airflow test fixture).
#
# The base sysexts built with the OS image, as "<sysext name>|<package>[&<package>...]".
# Sourced by ci-automation/image.sh as `source ci-automation/base_sysexts.sh 'local'`.

# shellcheck shell=bash disable=SC2034

ciabs_base_sysexts=(
    'containerd-flatcar|app-containers/containerd'
    'docker-flatcar|app-containers/docker'
)
