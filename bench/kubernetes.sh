#!/bin/bash
# The Kubernetes runtime against raw Pods on the same real cluster (tests/k8s/cluster.sh), in one run:
# create -> Running through our server as a lean 2 ms polling client sees it, against a raw Pod create ->
# container running seen by the same client, interleaved; then BURST creates at once both ways; the
# Kubernetes API requests per create (from the server's log); the server's RSS. Loopback and the cluster's
# own pod network only; bounded in count and time. Leaves the cluster as it found it.
#   bench/kubernetes.sh [SAMPLES] [BURST]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
samples=${1:-20} burst=${2:-50}
was_up=0
bash "$root/tests/k8s/cluster.sh" status >/dev/null 2>&1 && was_up=1
line=$(bash "$root/tests/k8s/cluster.sh" up)
export KUBECONFIG=${line#KUBECONFIG=}
bash "$root/tests/k8s/cluster.sh" load-image local/busybox:latest >/dev/null 2>&1
work=$(mktemp -d /tmp/osb-bench-k8s.XXXXXX)
ns=osb-bench-$$
kubectl_() { bash "$root/tests/k8s/cluster.sh" kubectl "$@"; }
kubectl_ create ns "$ns" >/dev/null
PORT=18293 KEY=bench-key
cat >"$work/config.lua" <<CFG
return { server = { port = $PORT, api_key = "$KEY", log_level = "DEBUG" },
         store = { path = "$work/state/db.sqlite" },
         runtime = { type = "kubernetes" },
         kubernetes = { kubeconfig_path = "$KUBECONFIG", namespace = "$ns", image_pull_policy = "Never" } }
CFG
"$root/build/opensandbox-server" --config "$work/config.lua" 2>"$work/server.log" &
spid=$!
cleanup() {
    kill "$spid" 2>/dev/null || true
    wait "$spid" 2>/dev/null || true
    kubectl_ delete ns "$ns" --wait=false >/dev/null 2>&1 || true
    rm -rf "$work"
    [ "$was_up" = 1 ] || bash "$root/tests/k8s/cluster.sh" down >/dev/null 2>&1 || true
}
trap cleanup EXIT
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$PORT/health" >/dev/null && break; sleep 0.1; done
echo "Measured $(date -u +%Y-%m-%d) on $(nproc) vCPUs, Kubernetes $(kubectl_ version -o json 2>/dev/null | grep -o '"gitVersion": *"[^"]*"' | tail -1 | cut -d'"' -f4), one node, image local/busybox:latest"
echo
echo "| measure | value |"
echo "|---|---|"
BENCH_URL="http://127.0.0.1:$PORT" BENCH_KEY=$KEY SAMPLES=$samples BURST=$burst RAW=kubernetes NAMESPACE=$ns \
    SERVER_LOG=$work/server.log timeout 1500 "$root/build/tests/c/core_scenario" "$root/bench/create_poll.lua" \
    2>"$work/client.log" || { tail -20 "$work/client.log" >&2; exit 1; }
# Kubernetes API requests per create: the provisioning of each sandbox logs its requests under the creating
# request's id (the first create of a run also checks the agent's ConfigMap)
python3 - "$work/server.log" <<'PY'
import json, sys, collections
per = collections.Counter(); creates = set()
for line in open(sys.argv[1]):
    try: e = json.loads(line)
    except ValueError: continue
    if e.get("msg") == "provisioning": creates.add(e.get("request_id"))
    if e.get("msg") == "kubernetes request" and e.get("request_id") in creates: per[e["request_id"]] += 1
counts = sorted(per.values())
if counts:
    print("| Kubernetes API requests per create (min / median / max over %d creates) | %d / %d / %d |"
          % (len(counts), counts[0], counts[len(counts) // 2], counts[-1]))
PY
echo "| server RSS after the run | $(awk '/VmRSS/{printf "%.1f MiB", $2/1024}' /proc/$spid/status) |"
