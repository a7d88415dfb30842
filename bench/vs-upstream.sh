#!/bin/bash
# The race (issue 15): this server side by side with upstream's Python server (opensandbox-server from PyPI,
# pinned), one run, same machine, same Docker daemon, same image, both configured alike: Docker runtime,
# bridge network, an API key, the same container hardening (capabilities dropped, no-new-privileges,
# pids limit 4096) and the same create body (local/busybox:latest, `sleep 3600`, cpu 500m, memory 256Mi).
# The client (bench/vs_upstream.lua, on our engine) measures both, interleaved, and prints one table.
#   bench/vs-upstream.sh
# Env: UPSTREAM_VERSION (default 1.1.1), VS_UPSTREAM_CACHE (where upstream's venv is kept between runs;
#      default ~/.cache/opensandbox-bench: the venv is $VS_UPSTREAM_CACHE/opensandbox-server-$UPSTREAM_VERSION),
#      SAMPLES (60), BURST (100), LIST_N (500), WRK_SECONDS (5), POLL_MS (2).
#
# Upstream's agent: its server copies /execd and /bootstrap.sh out of an "execd image" (runtime.execd_image,
# by default opensandbox/execd from Docker Hub, which this machine cannot reach), starting that image once
# with `tail -f /dev/null`. The script builds local/vs-upstream-execd:latest for it: local/busybox (for
# `tail`) plus this project's agent and bootstrap.sh at the root, the layout upstream reads. Both servers
# therefore start the same agent in their sandboxes.
#
# Safety: it runs under `flock -o /tmp/osb-docker.lock` as a whole. Upstream's server adopts every container
# on the daemon that has the label opensandbox.io/id (and removes those whose opensandbox.io/expires-at has
# passed), so the script refuses to start when the daemon holds such containers that are not its own. Both
# servers are stopped by PID at the end (trap); our sandboxes are found by our server's docker.instance
# label, upstream's by the ids it answered (file UP_IDS), and removed if the client left any.
set -euo pipefail
if [ -z "${VS_UPSTREAM_LOCKED:-}" ]; then
    VS_UPSTREAM_LOCKED=1 exec flock -o /tmp/osb-docker.lock "$0" "$@"
fi
root=$(cd "$(dirname "$0")/.." && pwd)
version=${UPSTREAM_VERSION:-1.1.1}
cache=${VS_UPSTREAM_CACHE:-$HOME/.cache/opensandbox-bench}
venv=$cache/opensandbox-server-$version
image=local/busybox:latest
execd_image=local/vs-upstream-execd:latest
PORT=18311 UP_PORT=18312 KEY=bench-vs-key
instance=bench-vs-$$

[ -x "$root/build/opensandbox-server" ] && [ -x "$root/build/tests/c/core_scenario" ] &&
    [ -x "$root/build/execd/opensandbox-execd" ] || { echo "vs-upstream: run scripts/build.sh first" >&2; exit 1; }
docker image inspect "$image" >/dev/null 2>&1 || bash "$root/tests/images/build-busybox.sh"
command -v wrk >/dev/null || { echo "vs-upstream: wrk is required" >&2; exit 1; }

# upstream's server in a venv of its own, kept between runs
if [ ! -f "$venv/.installed" ]; then
    rm -rf "$venv" && mkdir -p "$cache"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "opensandbox-server==$version"
    touch "$venv/.installed"
fi

# its agent image (see above); rebuilt when our agent is newer than the image
img_created=$(docker image inspect -f '{{.Created}}' "$execd_image" 2>/dev/null || true)
if [ -z "$img_created" ] || [ "$root/build/execd/opensandbox-execd" -nt "$root/build/vs-upstream-execd.stamp" ]; then
    c=$(docker create --label opensandbox.bench=vs-upstream "$image" true)
    docker cp "$root/build/execd/opensandbox-execd" "$c:/execd"
    docker cp "$root/execd/bootstrap.sh" "$c:/bootstrap.sh"
    docker commit "$c" "$execd_image" >/dev/null
    docker rm "$c" >/dev/null
    touch "$root/build/vs-upstream-execd.stamp"
fi

foreign=$(docker ps -aq --filter label=opensandbox.io/id)
if [ -n "$foreign" ]; then
    echo "vs-upstream: the daemon holds sandbox containers of another server; upstream's server would adopt" >&2
    echo "(and possibly expire) them. Not starting. Containers: $(echo $foreign)" >&2
    exit 1
fi

work=$(mktemp -d /tmp/osb-bench-vs.XXXXXX)
mkdir -p "$work/home"
: >"$work/upstream-ids"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do
        for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$p" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    # whatever sandbox the client could not delete: ours by instance label, upstream's by id
    left=$(docker ps -aq --filter "label=opensandbox.io/instance=$instance")
    for id in $(sort -u "$work/upstream-ids"); do
        left="$left $(docker ps -aq --filter "label=opensandbox.io/id=$id")"
    done
    left="$left $(docker ps -aq --filter name=sandbox-execd- --filter ancestor=$execd_image)"
    left=$(echo $left)
    if [ -n "$left" ]; then
        echo "vs-upstream: removing $(echo "$left" | wc -w) leftover container(s)" >&2
        docker rm -f $left >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

cat >"$work/config.lua" <<CFG
return { server = { port = $PORT, api_key = "$KEY", log_level = "INFO" },
         store = { path = "$work/state/db.sqlite" },
         docker = { instance = "$instance", network_mode = "bridge" } }
CFG
cat >"$work/sandbox.toml" <<CFG
[server]
host = "127.0.0.1"
port = $UP_PORT
api_key = "$KEY"
max_sandbox_timeout_seconds = 86400

[log]
level = "INFO"

[runtime]
type = "docker"
execd_image = "$execd_image"

[storage]
allowed_host_paths = []

[store]
type = "sqlite"
path = "$work/upstream.db"

[docker]
network_mode = "bridge"
drop_capabilities = ["AUDIT_WRITE", "MKNOD", "NET_ADMIN", "NET_RAW", "SYS_ADMIN", "SYS_MODULE", "SYS_PTRACE", "SYS_TIME", "SYS_TTY_CONFIG"]
no_new_privileges = true
pids_limit = 4096

[ingress]
mode = "direct"
CFG

"$root/build/opensandbox-server" --config "$work/config.lua" 2>"$work/ours.log" &
ours_pid=$!
pids+=("$ours_pid")
HOME=$work/home "$venv/bin/opensandbox-server" --config "$work/sandbox.toml" >"$work/upstream.log" 2>&1 &
up_pid=$!
pids+=("$up_pid")
for url in "http://127.0.0.1:$PORT" "http://127.0.0.1:$UP_PORT"; do
    for i in $(seq 1 300); do curl -fs "$url/health" >/dev/null && break; sleep 0.1; done
    [ "$i" -lt 300 ] || { echo "vs-upstream: $url did not start" >&2; tail -20 "$work"/*.log >&2; exit 1; }
done
sleep 2 # both idle before the first figure (RSS idle)

echo "Measured $(date -u '+%Y-%m-%d %H:%M UTC') on $(nproc) vCPUs ($(uptime | sed 's/.*load average: /load average /')" \
    "at the start), Docker $(docker version -f '{{.Server.Version}}'), image $image; upstream opensandbox-server" \
    "$version (Python $("$venv/bin/python" -c 'import platform; print(platform.python_version())'), uvicorn," \
    "one process); our commit $(git -C "$root" rev-parse --short HEAD)."
echo
OURS_URL=http://127.0.0.1:$PORT OURS_PID=$ours_pid OURS_INSTANCE=$instance UP_URL=http://127.0.0.1:$UP_PORT \
    UP_PID=$up_pid KEY=$KEY UP_IDS=$work/upstream-ids SANDBOX_IMAGE=$image UP_VERSION=$version \
    OPENSANDBOX_ROOT=$root timeout 3600 "$root/build/tests/c/core_scenario" "$root/bench/vs_upstream.lua" \
    2>"$work/client.log" || { cat "$work/client.log" >&2; echo "vs-upstream: the client failed" >&2; exit 1; }
if [ -n "${VS_UPSTREAM_LOG:-}" ]; then
    cp "$work/client.log" "$VS_UPSTREAM_LOG.client"
    cp "$work/upstream.log" "$VS_UPSTREAM_LOG.upstream"
    cp "$work/ours.log" "$VS_UPSTREAM_LOG.ours"
fi
