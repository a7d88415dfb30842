#!/bin/bash
# Line-based read benchmark (issue 17): 10 lines near the end of a 100 MB text file through
# GET /files/download?offset=&limit=, against the static agent started here on loopback.
# Prints the time of each read (curl time_total) and the agent's peak RSS (VmHWM of
# /proc/PID/status) before and after the reads: the reads must not grow it (the file is scanned
# in 64 KiB chunks, never held in memory).
#   bench/agent_lines.sh [agent binary]      (default build/execd/opensandbox-execd)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$root/build/execd/opensandbox-execd}
work=$(mktemp -d /tmp/osb-bench-lines.XXXXXX)
port=$((30000 + RANDOM % 20000))
file=$work/big.txt
# 100 MB of text: 1,000,000 lines of 100 bytes (99 + "\n"), each numbered
awk 'BEGIN { pad = sprintf("%90s", ""); gsub(/ /, "x", pad); for (i = 1; i <= 1000000; i++) printf "%08d %s\n", i, pad }' >"$file"
size=$(stat -c %s "$file")
OPENSANDBOX_EXECD_PORT=$port "$bin" 2>"$work/agent.log" &
apid=$!
trap 'kill $apid 2>/dev/null; wait $apid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$port/ping" >/dev/null && break; sleep 0.05; done
hwm() { awk '/VmHWM/ { print $2 " " $3 }' "/proc/$apid/status"; }
echo "Measured $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) vCPUs; file $size bytes, 1000000 lines; agent $(stat -c %s "$bin") bytes"
echo "agent peak RSS before: $(hwm)"
url="http://127.0.0.1:$port/files/download?path=$file&offset=999981&limit=10"
for i in 1 2 3 4 5; do
    t=$(curl -fs -o "$work/out.txt" -w '%{time_total}' "$url")
    lines=$(wc -l <"$work/out.txt")
    first=$(head -c 8 "$work/out.txt")
    echo "read $i: ${t}s, $((lines + 1)) lines, first line number $first"
done
echo "agent peak RSS after:  $(hwm)"
