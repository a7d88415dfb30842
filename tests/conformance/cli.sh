#!/bin/bash
# Drives upstream's CLI (opensandbox-cli, `osb`, pinned in python/requirements.txt) against a running server:
# create, get, list, exec (stdout, exit code, background), files (write, cat, upload, download, search),
# renew, kill; each output checked. Run by run-python.sh cli, which starts the server and puts osb on PATH.
# Env: OPENSANDBOX_URL, OPENSANDBOX_API_KEY, SANDBOX_IMAGE, OPENSANDBOX_USE_SERVER_PROXY=1.
set -uo pipefail
: "${OPENSANDBOX_URL:?}" "${OPENSANDBOX_API_KEY:?}"
image=${SANDBOX_IMAGE:-local/busybox:latest}
tmp=$(mktemp -d /tmp/osb-conformance-cli.XXXXXX)
# the CLI reads ~/.opensandbox/config.toml: give it an empty home, and the server through its env variables
export HOME=$tmp/home OPEN_SANDBOX_DOMAIN=${OPENSANDBOX_URL#*://} OPEN_SANDBOX_PROTOCOL=${OPENSANDBOX_URL%%://*}
export OPEN_SANDBOX_API_KEY=$OPENSANDBOX_API_KEY OPENSANDBOX_DISABLE_METRICS=1 NO_COLOR=1
if [ "${OPENSANDBOX_USE_SERVER_PROXY:-}" = 1 ]; then
    export OPEN_SANDBOX_USE_SERVER_PROXY=true
fi
mkdir -p "$HOME"
failures=0
sid=
osb() { command osb --no-color "$@"; }

pass() { echo "PASS $1"; }
fail() {
    echo "FAIL $1: $2"
    failures=$((failures + 1))
}
# json FILE EXPR: evaluates a Python expression over the JSON document `d` in FILE
json() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"; }
# osb_ok NAME ARGS...: runs osb, output to $tmp/out, stderr to $tmp/err; fails the step on a non-zero exit
osb_ok() {
    local name=$1
    shift
    if osb "$@" >"$tmp/out" 2>"$tmp/err"; then
        return 0
    fi
    fail "$name" "osb $* exited $?: $(tail -5 "$tmp/err") $(tail -5 "$tmp/out")"
    return 1
}
cleanup() {
    [ -n "$sid" ] && osb sandbox kill "$sid" >/dev/null 2>&1
    rm -rf "$tmp"
}
trap cleanup EXIT

run_id=cli-$RANDOM$RANDOM
if osb_ok "sandbox create" sandbox create -i "$image" --entrypoint sleep --entrypoint 3600 -t 10m \
    --resource cpu=500m --resource memory=256Mi -m run="$run_id" -e CLI_VAR=from-cli --ready-timeout 60s -o json; then
    sid=$(json "$tmp/out" 'd.get("id") or d.get("sandbox_id")')
    [ -n "$sid" ] && [ "$sid" != None ] && pass "sandbox create ($sid)" || fail "sandbox create" "no id in $(cat "$tmp/out")"
fi
[ -n "$sid" ] && [ "$sid" != None ] || {
    echo "cli: no sandbox, stopping"
    exit 1
}

if osb_ok "sandbox get" sandbox get "$sid" -o json; then
    state=$(json "$tmp/out" 'd["status"]["state"]')
    [ "$state" = Running ] && pass "sandbox get (Running)" || fail "sandbox get" "state $state"
fi

if osb_ok "sandbox list" sandbox list -m run="$run_id" -o json; then
    ids=$(json "$tmp/out" '" ".join(s["id"] for s in (d if isinstance(d, list) else d.get("items") or d.get("sandbox_infos") or []))')
    [ "$ids" = "$sid" ] && pass "sandbox list (metadata filter)" || fail "sandbox list" "got '$ids': $(head -c 400 "$tmp/out")"
fi
if osb_ok "sandbox list -s Paused" sandbox list -m run="$run_id" -s Paused -o json; then
    n=$(json "$tmp/out" 'len(d if isinstance(d, list) else d.get("items") or d.get("sandbox_infos") or [])')
    [ "$n" = 0 ] && pass "sandbox list (state filter)" || fail "sandbox list -s Paused" "$n sandboxes"
fi

# osb joins the words after -- into one shell command, each quoted: shell syntax goes through sh -c
if osb_ok "command run" command run "$sid" -o raw -- sh -c 'echo hello-$CLI_VAR; echo to-stderr >&2'; then
    grep -qx "hello-from-cli" "$tmp/out" && pass "command run (stdout, env)" ||
        fail "command run" "stdout: $(cat "$tmp/out")"
fi
osb command run "$sid" -o raw -- sh -c 'exit 7' >"$tmp/out" 2>"$tmp/err"
rc=$?
if [ "$rc" -ne 0 ] && grep -q "7" "$tmp/out" "$tmp/err"; then
    pass "command run (exit 7: osb exits $rc and names it)"
else
    fail "command run exit 7" "osb exited $rc: $(cat "$tmp/out" "$tmp/err")"
fi
if osb_ok "command run -w" command run "$sid" -w /tmp -o raw -- pwd; then
    grep -qx /tmp "$tmp/out" && pass "command run (workdir)" || fail "command run -w" "$(cat "$tmp/out")"
fi
if osb_ok "command run -d" command run "$sid" -d -o json -- 'echo bg-out'; then
    pass "command run (background)"
fi

if osb_ok "file write" file write "$sid" /tmp/cli/w.txt -c "written by osb"; then
    osb_ok "file cat" file cat "$sid" /tmp/cli/w.txt && grep -q "written by osb" "$tmp/out" &&
        pass "file write + cat" || fail "file cat" "$(cat "$tmp/out")"
fi
head -c 200000 /dev/urandom >"$tmp/up.bin"
if osb_ok "file upload" file upload "$sid" "$tmp/up.bin" /tmp/cli/up.bin &&
    osb_ok "file download" file download "$sid" /tmp/cli/up.bin "$tmp/down.bin"; then
    cmp -s "$tmp/up.bin" "$tmp/down.bin" && pass "file upload + download (200 kB, identical)" ||
        fail "file download" "content differs"
fi
if osb_ok "file search" file search "$sid" /tmp/cli -p '*.bin' -o json; then
    grep -q "/tmp/cli/up.bin" "$tmp/out" && ! grep -q "w.txt" "$tmp/out" && pass "file search" ||
        fail "file search" "$(head -c 400 "$tmp/out")"
fi
if osb_ok "file rm" file rm "$sid" /tmp/cli/w.txt; then
    osb file cat "$sid" /tmp/cli/w.txt >/dev/null 2>&1 && fail "file rm" "still readable" || pass "file rm"
fi

osb_ok "sandbox renew" sandbox renew "$sid" -t 30m -o json && pass "sandbox renew"

if osb_ok "sandbox kill" sandbox kill "$sid" -o json; then
    gone=
    for _ in $(seq 1 100); do
        if ! osb sandbox get "$sid" -o json >/dev/null 2>&1; then
            gone=1
            break
        fi
        sleep 0.3
    done
    [ -n "$gone" ] && pass "sandbox kill (then get fails)" && sid= || fail "sandbox kill" "still there"
fi
if osb sandbox get does-not-exist -o json >"$tmp/out" 2>&1; then
    fail "unknown id" "osb exited 0"
else
    grep -qi "not.found\|404" "$tmp/out" && pass "unknown id (not found)" || fail "unknown id" "$(cat "$tmp/out")"
fi

echo "cli: $failures failed"
[ "$failures" -eq 0 ]
