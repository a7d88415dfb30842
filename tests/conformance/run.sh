#!/bin/bash
# Runs the SDK conformance scripts of this folder (the official OpenSandbox JS SDK, pinned in package.json,
# driving the server; copied to build/conformance, where npm installs the SDK) against a real server started
# here (server.sh), on a real Docker daemon.
#   tests/conformance/run.sh lifecycle-smoke.mjs [execd-smoke.mjs ...]
# Env: OPENSANDBOX_BIN (server binary), SANDBOX_IMAGE. OPENSANDBOX_RUNTIME=kubernetes runs the server on the
# test cluster of tests/k8s/cluster.sh (which must be up, with the image loaded: KUBECONFIG names it) in a
# namespace of its own, removed afterwards.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
work=$root/build/conformance
mkdir -p "$work"
cp "$root"/tests/conformance/*.mjs "$root"/tests/conformance/package.json "$work"/
if [ ! -d "$work/node_modules/@alibaba-group/opensandbox" ]; then
    (cd "$work" && npm install --no-audit --no-fund --loglevel=error >/dev/null)
fi

# shellcheck source=tests/conformance/server.sh
. "$root/tests/conformance/server.sh"
conformance_server_start

rc=0
for script in "$@"; do
    echo "conformance: $script"
    if ! (cd "$work" && SANDBOX_IMAGE="${SANDBOX_IMAGE:-local/busybox:latest}" timeout 600 node "$script"); then
        rc=1
        echo "conformance: $script FAILED" >&2
        conformance_log_tail
    fi
done
conformance_server_stop
conformance_leaks || rc=1
exit $rc
