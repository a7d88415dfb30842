#!/bin/bash
# Sourced by the conformance runners (run.sh, run-python.sh): starts a real server of this build on the real
# Docker daemon (or, with OPENSANDBOX_RUNTIME=kubernetes, on the test cluster of tests/k8s/cluster.sh, in a
# namespace of its own), with its own docker.instance, API key, store and log in a temporary directory, and
# stops it again on exit. After the server stopped, every container (and Docker volume) still labelled with
# its instance is a leak: it is removed and conformance_leaks reports it.
#   . tests/conformance/server.sh; conformance_server_start
# Sets OPENSANDBOX_PORT, OPENSANDBOX_URL, OPENSANDBOX_API_KEY, CONFORMANCE_STATE (the temp dir),
# CONFORMANCE_INSTANCE. Env: OPENSANDBOX_BIN (server binary), OPENSANDBOX_RUNTIME, KUBECONFIG,
# CONFORMANCE_EXTRA_CONFIG (Lua table fields added to the config, e.g. "storage = {...},").
conformance_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
conformance_pid=
conformance_ns=
CONFORMANCE_INSTANCE=conformance-$$-$RANDOM
CONFORMANCE_STATE=$(mktemp -d /tmp/osb-conformance.XXXXXX)

conformance_server_stop() {
    if [ -n "$conformance_pid" ]; then
        kill -TERM "$conformance_pid" 2>/dev/null || true
        wait "$conformance_pid" 2>/dev/null || true
        conformance_pid=
    fi
}

# Prints and removes what the stopped server left on Docker; exit status 1 when there was something.
conformance_leaks() {
    [ "${OPENSANDBOX_RUNTIME:-docker}" = docker ] || return 0
    local label=opensandbox.io/instance=$CONFORMANCE_INSTANCE ids vols rc=0
    ids=$(docker ps -aq --filter "label=$label")
    if [ -n "$ids" ]; then
        echo "conformance: containers left behind by the tests: $(echo "$ids" | tr '\n' ' ')" >&2
        echo "$ids" | xargs -r docker rm -f >/dev/null 2>&1
        rc=1
    fi
    vols=$(docker volume ls -q --filter "label=$label")
    if [ -n "$vols" ]; then
        echo "conformance: volumes left behind by the tests: $(echo "$vols" | tr '\n' ' ')" >&2
        echo "$vols" | xargs -r docker volume rm -f >/dev/null 2>&1
        rc=1
    fi
    return $rc
}

conformance_cleanup() {
    conformance_server_stop
    conformance_leaks >/dev/null 2>&1 || true
    rm -rf "$CONFORMANCE_STATE"
    if [ -n "$conformance_ns" ]; then
        bash "$conformance_root/tests/k8s/cluster.sh" kubectl delete ns "$conformance_ns" --wait=false \
            >/dev/null 2>&1 || true
    fi
}

conformance_server_start() {
    local bin=${OPENSANDBOX_BIN:-$conformance_root/build/opensandbox-server}
    local runtime_cfg="docker = { instance = \"$CONFORMANCE_INSTANCE\" },"
    local try port
    OPENSANDBOX_API_KEY=conformance-$RANDOM$RANDOM
    trap conformance_cleanup EXIT
    if [ "${OPENSANDBOX_RUNTIME:-docker}" = kubernetes ]; then
        : "${KUBECONFIG:?OPENSANDBOX_RUNTIME=kubernetes needs KUBECONFIG (tests/k8s/cluster.sh up prints it)}"
        conformance_ns=osb-conformance-$$
        bash "$conformance_root/tests/k8s/cluster.sh" kubectl create ns "$conformance_ns" >/dev/null
        bash "$conformance_root/tests/k8s/cluster.sh" kubectl label ns "$conformance_ns" opensandbox.test=1 >/dev/null
        # pods are refused until the controller manager made the namespace's default ServiceAccount (slow
        # right after the apiserver restarts of the Kubernetes fault spec): wait for it, up to 120 s
        for _ in $(seq 1 120); do
            bash "$conformance_root/tests/k8s/cluster.sh" kubectl -n "$conformance_ns" get serviceaccount default \
                >/dev/null 2>&1 && break
            sleep 1
        done
        runtime_cfg="runtime = { type = \"kubernetes\" },
  kubernetes = { kubeconfig_path = \"$KUBECONFIG\", namespace = \"$conformance_ns\", image_pull_policy = \"Never\" },"
    fi
    # a random port, and another one when it turns out to be taken (up to 5 tries)
    for try in 1 2 3 4 5; do
        port=$((20000 + RANDOM % 20000))
        cat >"$CONFORMANCE_STATE/config.lua" <<CFG
return {
  server = { host = "127.0.0.1", port = $port, api_key = "$OPENSANDBOX_API_KEY", log_level = "DEBUG" },
  store = { path = "$CONFORMANCE_STATE/opensandbox.db" },
  $runtime_cfg
  ${CONFORMANCE_EXTRA_CONFIG:-}
}
CFG
        "$bin" --config "$CONFORMANCE_STATE/config.lua" >"$CONFORMANCE_STATE/server.log" 2>&1 &
        conformance_pid=$!
        for _ in $(seq 1 100); do
            curl -fs "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
            kill -0 "$conformance_pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$conformance_pid" 2>/dev/null; then
            break
        fi
        wait "$conformance_pid" 2>/dev/null || true
        conformance_pid=
        if ! grep -q "Address already in use" "$CONFORMANCE_STATE/server.log"; then
            echo "conformance: the server did not start (try $try):" >&2
            tail -20 "$CONFORMANCE_STATE/server.log" >&2
            return 1
        fi
    done
    [ -n "$conformance_pid" ] || return 1
    OPENSANDBOX_PORT=$port
    OPENSANDBOX_URL=http://127.0.0.1:$port
    export OPENSANDBOX_PORT OPENSANDBOX_URL OPENSANDBOX_API_KEY CONFORMANCE_STATE CONFORMANCE_INSTANCE
}

conformance_log_tail() {
    echo "conformance: server log tail:" >&2
    tail -"${1:-30}" "$CONFORMANCE_STATE/server.log" >&2
}
