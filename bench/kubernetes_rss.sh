#!/bin/bash
# The server's memory with N live sandboxes on Kubernetes (the issue's "RSS with 500 sandboxes"): restarts the
# test cluster (tests/k8s/cluster.sh) with room for N+20 pods, starts one server on it, creates N sandboxes
# (CONCURRENCY at a time; 16 MiB of memory each and no CPU request, so that the node's 2 CPUs do not cap
# them at 200 pods), waits until all run, reads the server's VmRSS and VmHWM, times one list request,
# deletes them all, and puts the cluster back as it was (110 pods; stopped if it was not running).
# Loopback and the cluster's own pod network only; bounded by N and a deadline.
#   bench/kubernetes_rss.sh [N] [CONCURRENCY]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
n=${1:-500} conc=${2:-10}
was_up=0
bash "$root/tests/k8s/cluster.sh" status >/dev/null 2>&1 && was_up=1
bash "$root/tests/k8s/cluster.sh" down >/dev/null 2>&1 || true
line=$(OSB_K8S_MAX_PODS=$((n + 20)) bash "$root/tests/k8s/cluster.sh" up)
export KUBECONFIG=${line#KUBECONFIG=}
bash "$root/tests/k8s/cluster.sh" load-image local/busybox:latest >/dev/null 2>&1
work=$(mktemp -d /tmp/osb-bench-rss.XXXXXX)
ns=osb-bench-rss-$$
kubectl_() { bash "$root/tests/k8s/cluster.sh" kubectl "$@"; }
kubectl_ create ns "$ns" >/dev/null
PORT=18294 KEY=bench-key
cat >"$work/config.lua" <<CFG
return { server = { port = $PORT, api_key = "$KEY" }, store = { path = "$work/state/db.sqlite" },
         runtime = { type = "kubernetes" },
         kubernetes = { kubeconfig_path = "$KUBECONFIG", namespace = "$ns", image_pull_policy = "Never",
                        create_timeout = 600, api_qps = 100, api_burst = 200 } }
CFG
"$root/build/opensandbox-server" --config "$work/config.lua" 2>"$work/server.log" &
spid=$!
cleanup() {
    kill "$spid" 2>/dev/null || true
    wait "$spid" 2>/dev/null || true
    kubectl_ delete ns "$ns" --wait=false >/dev/null 2>&1 || true
    rm -rf "$work"
    bash "$root/tests/k8s/cluster.sh" down >/dev/null 2>&1 || true
    [ "$was_up" = 0 ] || bash "$root/tests/k8s/cluster.sh" up >/dev/null 2>&1 || true
}
trap cleanup EXIT
api() { curl -s -H "OPEN-SANDBOX-API-KEY: $KEY" "$@"; }
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$PORT/health" >/dev/null && break; sleep 0.1; done
rss() { grep -E "^$1:" "/proc/$spid/status" | awk '{print $2}'; }
idle=$(rss VmRSS)
body='{"image":{"uri":"local/busybox:latest"},"entrypoint":["sleep","3600"],"timeout":3600,"resourceLimits":{"memory":"16Mi"}}'
t0=$SECONDS
seq 1 "$n" | xargs -P "$conc" -I{} curl -s -o /dev/null -w '%{http_code}\n' -H "OPEN-SANDBOX-API-KEY: $KEY" \
    -H 'Content-Type: application/json' -d "$body" "http://127.0.0.1:$PORT/v1/sandboxes" >"$work/codes"
accepted=$(grep -c '^202$' "$work/codes" || true)
deadline=$((SECONDS + 900))
running=0
while [ "$SECONDS" -lt "$deadline" ]; do
    running=$(api "http://127.0.0.1:$PORT/v1/sandboxes?state=Running&pageSize=1" | grep -o '"totalItems":[0-9]*' | cut -d: -f2)
    [ "${running:-0}" -ge "$accepted" ] && break
    sleep 2
done
all_running_s=$((SECONDS - t0))
list_ms=$(curl -s -o /dev/null -w '%{time_total}' -H "OPEN-SANDBOX-API-KEY: $KEY" \
    "http://127.0.0.1:$PORT/v1/sandboxes?pageSize=200" | awk '{printf "%.1f", $1 * 1000}')
echo "Measured $(date -u +%Y-%m-%d) on $(nproc) vCPUs, one node, image local/busybox:latest, $conc creates at a time"
echo
echo "| measure | value |"
echo "|---|---|"
echo "| creates accepted (202) | $accepted of $n |"
echo "| sandboxes Running | ${running:-0} (all of them after ${all_running_s} s) |"
echo "| server RSS idle | $idle kB |"
echo "| server RSS with ${running:-0} sandboxes (VmRSS) | $(rss VmRSS) kB |"
echo "| server peak RSS (VmHWM) | $(rss VmHWM) kB |"
echo "| GET /v1/sandboxes?pageSize=200 (one request, first page) | $list_ms ms |"
for page in $(seq 1 $(((n + 199) / 200))); do
    api "http://127.0.0.1:$PORT/v1/sandboxes?pageSize=200&page=$page" | grep -o '"id":"[^"]*"' | cut -d'"' -f4
done >"$work/ids"
xargs -P "$conc" -I{} curl -s -o /dev/null -X DELETE -H "OPEN-SANDBOX-API-KEY: $KEY" \
    "http://127.0.0.1:$PORT/v1/sandboxes/{}" <"$work/ids"
