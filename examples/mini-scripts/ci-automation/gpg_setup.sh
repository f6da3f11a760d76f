# Miniature Flatcar scripts repository (flatcar-airflow test fixture).
#
# Signing setup, sourced by the steps after ci_automation_common.sh.
# INPUT (optional, environment):
#   SIGNER       the key id to sign artifacts with
#   SIGNING_KEY  path of the secret key file to import for it
# OUTPUT:
#   SIGNER is exported: the key id when both were given and the key could be imported into
#   ./.gnupg, empty otherwise (then nothing gets signed). SIGNING_KEY is cleared. Never fails.

# shellcheck shell=bash

if [[ -n ${SIGNER:-} && -n ${SIGNING_KEY:-} ]]; then
    if [[ ${HOME:-}/.gnupg -ef ${PWD}/.gnupg ]]; then
        echo "gpg_setup: \$HOME/.gnupg is ${PWD}/.gnupg; refusing to import a signing key there" >&2
        SIGNER=''
    else
        GNUPGHOME="${PWD}/.gnupg"
        export GNUPGHOME
        mkdir -p "${GNUPGHOME}"
        chmod 0700 "${GNUPGHOME}"
        if ! gpg --batch --import "${SIGNING_KEY}"; then
            echo "gpg_setup: could not import ${SIGNING_KEY}; artifacts will not be signed" >&2
            SIGNER=''
        fi
    fi
else
    SIGNER=''
fi
SIGNING_KEY=''
export SIGNER
