#!/bin/bash
# A yardstick, not part of CI: runs upstream's own Python end-to-end suite (tests/python of the OpenSandbox
# repository, read from a local clone or bare mirror; nothing of it is copied into this project) with the
# pinned PyPI SDK of python/requirements.txt against a server of this build, through run-python.sh.
#   tests/conformance/upstream-e2e.sh [PYTEST ARGS...]
# Env: UPSTREAM_REPO (a git dir of alibaba/OpenSandbox; default the mirror of this machine), UPSTREAM_REV
# (default HEAD), SANDBOX_IMAGE (default local/busybox:latest), and run-python.sh's.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
repo=${UPSTREAM_REPO:-/work/.mirror/alibaba+OpenSandbox/repo}
work=$root/build/upstream-e2e
rm -rf "$work" && mkdir -p "$work"
git -C "$repo" archive "${UPSTREAM_REV:-HEAD}" tests/python | tar -x -C "$work"
# upstream's pyproject adds pytest plugins to the SDK: pinned here, in a venv of their own
export CONFORMANCE_VENV=$root/build/upstream-e2e-py
bash "$root/tests/conformance/python-venv.sh" "$CONFORMANCE_VENV" \
    pytest-asyncio==1.3.0 pytest-timeout==2.4.0 pytest-order==1.3.0 redis==5.3.1
# what upstream's e2e script prepares for its volume tests: a host directory with a marker, and a named
# volume with a marker and a sub-directory (made with the test image, removed afterwards)
mkdir -p /tmp/opensandbox-e2e/host-volume-test
echo "opensandbox-e2e-marker" >/tmp/opensandbox-e2e/host-volume-test/marker.txt
chmod -R 755 /tmp/opensandbox-e2e
docker volume rm opensandbox-e2e-pvc-test >/dev/null 2>&1 || true
docker volume create opensandbox-e2e-pvc-test >/dev/null
docker run --rm -v opensandbox-e2e-pvc-test:/data "${SANDBOX_IMAGE:-local/busybox:latest}" sh -c \
    "echo pvc-marker-data >/data/marker.txt && mkdir -p /data/datasets/train && echo pvc-subpath-marker >/data/datasets/train/marker.txt"
trap 'docker volume rm opensandbox-e2e-pvc-test >/dev/null 2>&1 || true; rm -rf /tmp/opensandbox-e2e' EXIT
export CONFORMANCE_EXTRA_HOST_PATHS=/tmp/opensandbox-e2e
cd "$work/tests/python"
export OPENSANDBOX_SANDBOX_DEFAULT_IMAGE=${SANDBOX_IMAGE:-local/busybox:latest}
# the suite's own settings come from its pyproject.toml ([tool.pytest.ini_options])
"$root/tests/conformance/run-python.sh" exec sh -c '
    export OPENSANDBOX_TEST_DOMAIN=${OPENSANDBOX_URL#*://} OPENSANDBOX_TEST_API_KEY=$OPENSANDBOX_API_KEY
    exec python -m pytest -p no:cacheprovider --timeout 300 "$@"' sh "$@"
