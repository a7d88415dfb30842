#!/bin/bash
# Warm pool claims (issue 15): CLAIMS (default 1000) creates with extensions.poolRef at RATE (default 10)
# per second while the pool refills, through a client polling every 2 ms (bench/pool_claim.lua, on our own
# engine); claim -> Running median/p99 and errors. Starts its own server (docker.instance of its own,
# pools.on_empty = "error" so that an empty pool is an error, not a slow cold create) and removes
# everything it created. Loopback and the Docker socket only. Run under the Docker lock:
#   flock -o /tmp/osb-docker.lock bench/pool_claim.sh [CLAIMS] [RATE]
# Env (bench/pool_claim.lua): BUFFER_MIN, BUFFER_MAX, POOL_MAX, KEEP=1, REFILL_CONCURRENCY (default 4);
# SERVER_NICE (run the server under nice -n); RAISE_NEIGH=0 (keep the host's neighbour table limits);
# DOCKER_SHARES (cpu.shares of Docker's cgroup for the run, cgroup v1); STORE_DIR (where the server's store
# goes, default the run's directory under /tmp: e.g. /dev/shm to take the disk out of the claim's path);
# CLAIM_DIR (docker.pool_claim_dir for the run: a directory of its own is made in it; default the server's,
# /run/opensandbox/pool-claims, which is best on a tmpfs: where /run is not one, e.g. /dev/shm; "off": claims
# are POSTed to the agents); FIRST_COMMAND=1 (bench/pool_claim.lua: also claim -> first command done).
# The server's log is left in /tmp/osb-bench-pool-server.log.
# (one compound command, read whole before it runs: bash reads a script as it goes, and an edit of this file
# during a 20-minute run made it run other lines than it started with)
{
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/osb-bench-pool.XXXXXX)
PORT=18293 KEY=bench-key
instance="bench-pool-$$"
store_dir="${STORE_DIR:-$work}/osb-bench-pool-state.$$"
claim_cfg=
if [ "${CLAIM_DIR:-}" = off ]; then
    claim_cfg="pool_claim_dir = false,"
elif [ -n "${CLAIM_DIR:-}" ]; then
    claim_dir=$(mktemp -d "$CLAIM_DIR/osb-bench-claims.XXXXXX")
    claim_cfg="pool_claim_dir = \"$claim_dir\","
fi
cat >"$work/config.lua" <<CFG
return { server = { port = $PORT, api_key = "$KEY", log_level = "INFO" },
         store = { path = "$store_dir/db.sqlite" },
         docker = { instance = "$instance", $claim_cfg },
         pools = { on_empty = "error", refill_concurrency = ${REFILL_CONCURRENCY:-4}, max_pool_size = 2000 } }
CFG
${SERVER_NICE:+nice -n "$SERVER_NICE"} "$root/build/opensandbox-server" --config "$work/config.lua" 2>"$work/server.log" &
spid=$!
# ~1000 containers on one bridge overflow the kernel's neighbour (ARP) table at its defaults (gc_thresh3 1024,
# and entries over gc_thresh2 512 are collected after 5 s): connections to members then wait for ARP or
# are dropped ("neighbor table overflow" in dmesg; a claim's agent call took 1 s, some 10 s). A host meant for
# that many sandboxes raises them (README "Warm pools"); this run does, and puts the old values back after.
neigh=/proc/sys/net/ipv4/neigh/default
old_gc="$(cat $neigh/gc_thresh1) $(cat $neigh/gc_thresh2) $(cat $neigh/gc_thresh3)"
if [ "${RAISE_NEIGH:-1}" = 1 ]; then
    echo 4096 >$neigh/gc_thresh1 && echo 8192 >$neigh/gc_thresh2 && echo 16384 >$neigh/gc_thresh3
fi
# DOCKER_SHARES=N (cgroup v1 hosts without systemd): the cpu.shares of Docker's parent cgroup for the run (put
# back after). There all containers together weigh as much as one task of the root cgroup (dockerd's threads,
# containerd, the shims, runc), so a claim's agent waits behind the daemon making the refill's members.
shares_file=/sys/fs/cgroup/cpu/docker/cpu.shares
old_shares=
if [ -n "${DOCKER_SHARES:-}" ] && [ -w "$shares_file" ]; then
    old_shares=$(cat "$shares_file")
    echo "$DOCKER_SHARES" >"$shares_file"
fi
cleanup() {
    if [ -n "$old_shares" ]; then echo "$old_shares" >"$shares_file"; fi
    kill $spid 2>/dev/null || true
    wait $spid 2>/dev/null || true
    cp "$work/server.log" /tmp/osb-bench-pool-server.log 2>/dev/null || true
    read -r g1 g2 g3 <<<"$old_gc"
    echo "$g1" >$neigh/gc_thresh1; echo "$g2" >$neigh/gc_thresh2; echo "$g3" >$neigh/gc_thresh3
    docker ps -aq --filter "label=opensandbox.io/instance=$instance" | xargs -r -n 25 -P 4 docker rm -f -v >/dev/null 2>&1 || true
    rm -rf "$work" "$store_dir" ${claim_dir:+"$claim_dir"}
}
trap cleanup EXIT
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$PORT/health" >/dev/null && break; sleep 0.1; done
echo "Measured $(date -u +%Y-%m-%d) on $(nproc) vCPUs, Docker $(docker version -f '{{.Server.Version}}'), image local/busybox:latest, refill_concurrency=${REFILL_CONCURRENCY:-4}, store in $(df --output=fstype "${STORE_DIR:-$work}" | tail -1) ${STORE_DIR:-$work}, claim files $([ "${CLAIM_DIR:-}" = off ] && echo "off" || echo "in $(df --output=fstype "${claim_dir:-/run}" | tail -1) ${claim_dir:-/run/opensandbox/pool-claims}"), neighbour table gc_thresh1/2/3 $(cat $neigh/gc_thresh1)/$(cat $neigh/gc_thresh2)/$(cat $neigh/gc_thresh3), Docker cgroup cpu.shares $(cat "$shares_file" 2>/dev/null || echo -)"
echo
echo "| measure | value |"
echo "|---|---|"
BENCH_URL="http://127.0.0.1:$PORT" BENCH_KEY=$KEY CLAIMS=${1:-1000} RATE=${2:-10} \
    OPENSANDBOX_ROOT=$root timeout 1800 "$root/build/tests/c/core_scenario" "$root/bench/pool_claim.lua" 2>"$work/client.log" ||
    { tail -20 "$work/client.log" >&2; tail -20 "$work/server.log" >&2; exit 1; }
cat "$work/client.log" >&2
# where the claims' time went inside the server: the "sandbox claimed from pool" log lines' store_ms (the
# durable write) and agent_ms (the member's agent taking the claim)
python3 - "$work/server.log" <<'PY'
import json, sys
store, agent, via = [], [], {}
for line in open(sys.argv[1], errors="replace"):
    if '"sandbox claimed from pool"' not in line:
        continue
    try:
        o = json.loads(line)
    except ValueError:
        continue
    store.append(float(o.get("store_ms", 0)))
    agent.append(float(o.get("agent_ms", 0)))
    via[o.get("via", "agent")] = via.get(o.get("via", "agent"), 0) + 1
def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, max(0, int(len(v) * p + 0.999999) - 1))] if v else float("nan")
if store:
    print("| in the server, per claim: durable write median / p99 / max | %.2f / %.2f / %.2f ms |"
          % (pct(store, .5), pct(store, .99), max(store)))
    print("| in the server, per claim: handing the claim over (claim file or agent call) median / p99 / max | "
          "%.2f / %.2f / %.2f ms |" % (pct(agent, .5), pct(agent, .99), max(agent)))
    print("| in the server: claims handed over as a claim file / over HTTP | %d / %d |"
          % (via.get("file", 0), via.get("agent", 0)))
PY
exit
}
