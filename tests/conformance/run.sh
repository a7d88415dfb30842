#!/bin/bash
# Runs the SDK conformance scripts of this folder (the official OpenSandbox JS SDK, pinned in package.json,
# driving the server; copied to build/conformance, where npm installs the SDK) against a real server started
# here, on a real Docker daemon.
#   tests/conformance/run.sh lifecycle-smoke.mjs [execd-smoke.mjs ...]
# Env: OPENSANDBOX_BIN (server binary), SANDBOX_IMAGE. OPENSANDBOX_RUNTIME=kubernetes runs the server on the
# test cluster of tests/k8s/cluster.sh (which must be up, with the image loaded: KUBECONFIG names it) in a
# namespace of its own, removed afterwards.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${OPENSANDBOX_BIN:-$root/build/opensandbox-server}
work=$root/build/conformance
mkdir -p "$work"
cp "$root"/tests/conformance/*.mjs "$root"/tests/conformance/package.json "$work"/
if [ ! -d "$work/node_modules/@alibaba-group/opensandbox" ]; then
    (cd "$work" && npm install --no-audit --no-fund --loglevel=error >/dev/null)
fi

state=$(mktemp -d /tmp/osb-conformance.XXXXXX)
key=conformance-$RANDOM$RANDOM
runtime_cfg="docker = { instance = \"conformance-$$\" },"
ns=
if [ "${OPENSANDBOX_RUNTIME:-docker}" = kubernetes ]; then
    : "${KUBECONFIG:?OPENSANDBOX_RUNTIME=kubernetes needs KUBECONFIG (tests/k8s/cluster.sh up prints it)}"
    ns=osb-conformance-$$
    bash "$root/tests/k8s/cluster.sh" kubectl create ns "$ns" >/dev/null
    bash "$root/tests/k8s/cluster.sh" kubectl label ns "$ns" opensandbox.test=1 >/dev/null
    runtime_cfg="runtime = { type = \"kubernetes\" },
  kubernetes = { kubeconfig_path = \"$KUBECONFIG\", namespace = \"$ns\", image_pull_policy = \"Never\" },"
fi
pid=
cleanup() {
    [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null || true
    [ -n "$pid" ] && wait "$pid" 2>/dev/null || true
    rm -rf "$state"
    if [ -n "$ns" ]; then
        bash "$root/tests/k8s/cluster.sh" kubectl delete ns "$ns" --wait=false >/dev/null 2>&1 || true
    fi
}
trap cleanup EXIT
# a random port, and another one when it turns out to be taken (up to 5 tries)
for _try in 1 2 3 4 5; do
    port=$((20000 + RANDOM % 20000))
    cat >"$state/config.lua" <<CFG
return {
  server = { host = "127.0.0.1", port = $port, api_key = "$key", log_level = "DEBUG" },
  store = { path = "$state/opensandbox.db" },
  $runtime_cfg
}
CFG
    "$bin" --config "$state/config.lua" >"$state/server.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 100); do
        curl -fs "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null || ! grep -q "Address already in use" "$state/server.log"; then
        break
    fi
    wait "$pid" 2>/dev/null || true
done

rc=0
for script in "$@"; do
    echo "conformance: $script"
    if ! (cd "$work" && OPENSANDBOX_URL="http://127.0.0.1:$port" OPENSANDBOX_API_KEY="$key" \
        SANDBOX_IMAGE="${SANDBOX_IMAGE:-local/busybox:latest}" timeout 600 node "$script"); then
        rc=1
        echo "conformance: $script FAILED; server log tail:" >&2
        tail -30 "$state/server.log" >&2
    fi
done
exit $rc
