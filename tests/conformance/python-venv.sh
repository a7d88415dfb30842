#!/bin/bash
# Makes (or keeps) a venv of Debian's python3 with python/requirements.txt and any extra pinned packages
# given as arguments, reinstalled only when that list changed.
#   tests/conformance/python-venv.sh VENV_DIR [PKG==VERSION ...]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv=$1
shift
stamp=$( (cat "$here/python/requirements.txt" && echo "$@") | sha256sum | cut -c1-16)
if [ "$(cat "$venv/.requirements" 2>/dev/null)" != "$stamp" ]; then
    rm -rf "$venv"
    "${PYTHON:-/usr/bin/python3}" -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check --no-input -r "$here/python/requirements.txt" "$@"
    echo "$stamp" >"$venv/.requirements"
fi
