#!/bin/bash
# The package test (scripts/test.sh stage "package"): the .deb installs and starts on a fresh Debian 12.
#
#  1. scripts/package.sh builds build-pkg/opensandbox-server_<version>_<arch>.deb from this tree.
#  2. A Debian 12 root file system made by `debootstrap --variant=minbase` (plus systemd as init) is cached as
#     a tarball under $OPENSANDBOX_CI_CACHE (default /var/cache/opensandbox-ci; ~1 minute to make, remade when
#     the recipe below changes), and `docker import`ed as an image of this run.
#  3. A container of it runs systemd as PID 1, in its own network namespace, with the host's Docker socket
#     mounted at /run/docker.sock and a `docker` group of the socket's gid (as installing docker.io would
#     make; the package recommends docker.io, which is not installed here: the host's daemon is used).
#     apt's downloads are cached under $OPENSANDBOX_CI_CACHE/apt-archives.
#  4. `apt-get install ./the.deb`: its dependencies come from Debian's archive; the postinst creates the user
#     and starts the unit, whose shipped configuration is used unchanged (127.0.0.1:8080 inside the
#     container, the store in /var/lib/opensandbox, a docker.instance of its own: the identity its new store
#     makes). Checked: the unit is enabled and active as user opensandbox, `systemd-analyze verify` is clean,
#     /health answers, a sandbox is created (a container on the host's daemon), runs, and is deleted,
#     `systemctl reload` keeps it serving, /docs and /redoc render in headless Chromium (screenshots that
#     tests/package/png_check.py finds not blank; the Swagger UI's DOM holds the operations read from
#     /openapi.json), then `apt-get remove` stops it and `apt-get purge` removes its configuration and state.
#     The host's curl and Chromium reach the server through the container's network namespace (nsenter).
#  5. Everything it started is removed at exit: the container, the image, the containers its server made,
#     agent volumes that did not exist before and that nothing uses, its temporary directory.
#
# Run as root (docker, nsenter); needs debootstrap, chromium and python3 (scripts/setup.sh installs them).
# On a shared daemon: PACKAGE_TEST_LOCK=/tmp/osb-docker.lock bash tests/package/run.sh (steps 1 and 2, which
# do not touch Docker, run before the lock is taken; everything from `docker import` on holds it).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cache=${OPENSANDBOX_CI_CACHE:-/var/cache/opensandbox-ci}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
suite=bookworm
include=systemd,systemd-sysv
image_uri=local/busybox:latest
py=/usr/bin/python3
run_id=osb-pkgtest-$$
work=$(mktemp -d /tmp/osb-pkgtest.XXXXXX)
container=""
image=""
identity=""
volumes_before=""
lock_wait=0

log() { echo "package-test: $*" >&2; }
fail() {
    log "FAIL: $*"
    if [ -n "$container" ]; then
        docker exec "$container" journalctl -u opensandbox --no-pager -n 40 >&2 2>/dev/null || true
    fi
    exit 1
}

cleanup() {
    local rc=$?
    set +e
    if [ -n "$container" ]; then
        if [ -z "$identity" ]; then
            identity=$(server_identity)
        fi
        docker rm -f "$container" >/dev/null 2>&1
    fi
    if [ -n "$identity" ]; then
        docker ps -aq --filter "label=opensandbox.io/instance=$identity" | xargs -r docker rm -f >/dev/null 2>&1
    fi
    # agent volumes made during this run (by this server) and used by nothing: removed; `volume rm`
    # refuses a volume in use
    if [ -n "$image" ]; then
        comm -13 <(echo "$volumes_before") <(docker volume ls -q --filter label=opensandbox.io/agent=true | sort) |
            xargs -r docker volume rm >/dev/null 2>&1
    fi
    if [ -n "$image" ]; then
        docker rmi "$image" >/dev/null 2>&1
    fi
    rm -rf "$work"
    exit $rc
}
trap cleanup EXIT

in_ct() { docker exec "$container" "$@"; }
server_identity() {
    in_ct journalctl -u opensandbox -o cat --no-pager 2>/dev/null |
        sed -n 's/.*"msg":"server identity".*"identity":"\([0-9a-f-]*\)".*/\1/p' |
        head -1
}
# commands in the container's network namespace (the server listens on its loopback)
in_net() { nsenter --net="/proc/$(docker inspect -f '{{.State.Pid}}' "$container")/ns/net" "$@"; }
api() { # api METHOD PATH [BODY] -> prints "STATUS BODY"
    local out
    out=$(in_net curl -s -o "$work/body" -w '%{http_code}' -X "$1" "http://127.0.0.1:8080$2" \
        ${3:+-H 'Content-Type: application/json' --data "$3"}) || true
    echo "$out $(cat "$work/body" 2>/dev/null)"
}
json_get() { "$py" -c 'import json,sys; v=json.loads(sys.argv[1]); [v:=v[k] for k in sys.argv[2:]]; print(v)' "$@"; }

for tool in debootstrap chromium nsenter curl docker "$py"; do
    command -v "$tool" >/dev/null || fail "$tool is not installed (scripts/setup.sh)"
done

# ---- 1. the package ---------------------------------------------------------------------------------------
deb=$(sh "$root/scripts/package.sh" 2>"$work/package.log" | tail -1) ||
    { tail -30 "$work/package.log" >&2; fail "scripts/package.sh"; }
[ -s "$deb" ] || fail "scripts/package.sh made no package"
log "package: $deb"
dpkg-deb -f "$deb" Recommends | grep -qw docker.io || fail "docker.io is not recommended"

# ---- 2. the Debian 12 root file system (cached) and its image --------------------------------------------
recipe="debootstrap --variant=minbase --include=$include $suite"
key=$(echo "$recipe" | sha256sum | cut -c1-12)
tarball=$cache/debian12-minbase-$key.tar
mkdir -p "$cache/apt-archives/partial"
if [ ! -s "$tarball" ]; then
    log "making $tarball ($recipe; about a minute)"
    (
        flock 9
        if [ ! -s "$tarball" ]; then
            rootfs=$cache/rootfs.$$
            rm -rf "$rootfs"
            debootstrap --variant=minbase --include="$include" "$suite" "$rootfs" "$mirror" \
                >"$work/debootstrap.log" 2>&1 ||
                { tail -20 "$work/debootstrap.log" >&2; rm -rf "$rootfs"; exit 1; }
            rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*_Packages
            tar -C "$rootfs" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
            rm -rf "$rootfs"
        fi
    ) 9>"$cache/.rootfs.lock" || fail "debootstrap failed"
fi
if [ -n "${PACKAGE_TEST_LOCK:-}" ]; then
    exec 8>"$PACKAGE_TEST_LOCK"
    lock_wait=$SECONDS
    flock 8
    lock_wait=$((SECONDS - lock_wait))
fi
docker image inspect "$image_uri" >/dev/null 2>&1 || fail "$image_uri is missing (tests/images/build-busybox.sh)"
volumes_before=$(docker volume ls -q --filter label=opensandbox.io/agent=true | sort)
image=$run_id:debian12
docker import "$tarball" "$image" >/dev/null || fail "docker import failed"

# ---- 3. the container: systemd as init, the host's Docker socket -----------------------------------------
sock_gid=$(stat -c %g /var/run/docker.sock)
container=$(docker run -d --name "$run_id" --label opensandbox.test=1 \
    --tmpfs /run --tmpfs /run/lock -v /sys/fs/cgroup:/sys/fs/cgroup:ro -e container=docker \
    --stop-signal SIGRTMIN+3 -v /var/run/docker.sock:/run/docker.sock \
    -v "$cache/apt-archives:/var/cache/apt/archives" "$image" /sbin/init) || fail "docker run failed"
state=""
for _ in $(seq 1 300); do # PID 1 takes a moment to open its bus
    state=$(docker exec "$container" systemctl is-system-running 2>/dev/null || true)
    case $state in running | degraded) break ;; esac
    sleep 0.2
done
[ "$state" = running ] || [ "$state" = degraded ] || fail "systemd did not come up ($state)"
if [ "$sock_gid" != 0 ]; then
    in_ct groupadd --system --gid "$sock_gid" docker
fi
docker cp "$deb" "$container:/tmp/" || fail "docker cp"

# ---- 4. install: dependencies from Debian's archive, the unit enabled and started ----------------------
log "installing $(basename "$deb") and its dependencies"
in_ct sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    /tmp/$(basename "$deb")" >"$work/apt.log" 2>&1 || { tail -30 "$work/apt.log" >&2; fail "apt-get install"; }

[ "$(in_ct systemctl is-enabled opensandbox.service)" = enabled ] || fail "the unit is not enabled"
for _ in $(seq 1 100); do
    [ "$(api GET /health | cut -d' ' -f1)" = 200 ] && break
    sleep 0.2
done
[ "$(in_ct systemctl is-active opensandbox.service)" = active ] || fail "the unit is not active"
res=$(api GET /health)
[ "${res%% *}" = 200 ] || fail "/health: $res"
log "/health: $res"
pid=$(in_ct systemctl show -p MainPID --value opensandbox.service)
[ "$(in_ct stat -c %U "/proc/$pid")" = opensandbox ] || fail "the server does not run as user opensandbox"
in_ct id -nG opensandbox | grep -qw docker || fail "user opensandbox is not in the docker group"
[ "$(in_ct stat -c %a /var/lib/opensandbox)" = 700 ] || fail "/var/lib/opensandbox is not 0700"
in_ct test -s /var/lib/opensandbox/opensandbox.db || fail "the store is not in /var/lib/opensandbox"
in_ct dpkg-query -W -f '${Conffiles}\n' opensandbox-server | grep -q /etc/opensandbox/config.lua ||
    fail "/etc/opensandbox/config.lua is not a conffile"
verify=$(in_ct systemd-analyze verify /usr/lib/systemd/system/opensandbox.service 2>&1) ||
    fail "systemd-analyze verify: $verify"
[ -z "$verify" ] || fail "systemd-analyze verify: $verify"
identity=$(server_identity)
[ -n "$identity" ] || fail "no server identity in the journal"
log "active as user opensandbox, identity $identity; systemd-analyze verify clean"

# a sandbox on the host's daemon, through the packaged server
body="{\"image\":{\"uri\":\"$image_uri\"},\"entrypoint\":[\"sleep\",\"600\"],\"timeout\":600,\"resourceLimits\":{}}"
res=$(api POST /v1/sandboxes "$body")
[ "${res%% *}" = 202 ] || fail "create: $res"
id=$(json_get "${res#* }" id)
for _ in $(seq 1 150); do
    res=$(api GET "/v1/sandboxes/$id")
    [ "$(json_get "${res#* }" status state 2>/dev/null)" = Running ] && break
    sleep 0.2
done
[ "$(json_get "${res#* }" status state)" = Running ] || fail "sandbox $id is not Running: $res"
[ -n "$(docker ps -q --filter "label=opensandbox.io/id=$id" --filter "label=opensandbox.io/instance=$identity")" ] ||
    fail "no container of sandbox $id on the daemon"
res=$(api DELETE "/v1/sandboxes/$id")
[ "${res%% *}" = 204 ] || fail "delete: $res"
res=$(api GET "/v1/sandboxes/$id")
[ "${res%% *}" = 404 ] || fail "get after delete: $res"
[ -z "$(docker ps -aq --filter "label=opensandbox.io/id=$id")" ] || fail "the container of $id is still there"
log "sandbox $id created, Running, deleted"

in_ct systemctl reload opensandbox.service || fail "systemctl reload"
for _ in $(seq 1 50); do
    in_ct journalctl -u opensandbox -o cat --no-pager | grep -q '"msg":"hooks reloaded"' && break
    sleep 0.1
done
in_ct journalctl -u opensandbox -o cat --no-pager | grep -q '"msg":"hooks reloaded"' ||
    fail "systemctl reload did not reload the hooks"
[ "$(in_ct systemctl is-active opensandbox.service)" = active ] || fail "inactive after reload"
[ "$(api GET /health | cut -d' ' -f1)" = 200 ] || fail "/health after reload"

# ---- /docs and /redoc in headless Chromium --------------------------------------------------------------
chrome() {
    in_net chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --no-first-run \
        --user-data-dir="$work/chromium" --window-size=1280,900 --virtual-time-budget=15000 "$@" \
        2>>"$work/chromium.log" 8>&-
}
chrome --screenshot="$work/docs.png" http://127.0.0.1:8080/docs >/dev/null || fail "chromium /docs"
"$py" "$root/tests/package/png_check.py" "$work/docs.png" || fail "/docs rendered blank"
chrome --dump-dom http://127.0.0.1:8080/docs >"$work/docs.html" || fail "chromium --dump-dom /docs"
grep -q "Create a sandbox" "$work/docs.html" || fail "the Swagger UI did not render the operations of /openapi.json"
chrome --screenshot="$work/redoc.png" http://127.0.0.1:8080/redoc >/dev/null || fail "chromium /redoc"
"$py" "$root/tests/package/png_check.py" "$work/redoc.png" || fail "/redoc rendered blank"
# the check itself: a blank page is found blank
chrome --screenshot="$work/blank.png" about:blank >/dev/null || fail "chromium about:blank"
if "$py" "$root/tests/package/png_check.py" "$work/blank.png"; then
    fail "png_check.py does not find a blank page blank"
fi

# ---- remove and purge -----------------------------------------------------------------------------------
in_ct sh -c 'DEBIAN_FRONTEND=noninteractive apt-get remove -y -qq opensandbox-server' >>"$work/apt.log" 2>&1 ||
    fail "apt-get remove"
[ "$(in_ct systemctl is-active opensandbox.service || true)" != active ] || fail "still active after remove"
[ "$(api GET /health | cut -d' ' -f1)" = 000 ] || fail "still serving after remove"
in_ct test -f /etc/opensandbox/config.lua || fail "remove took the conffile"
in_ct sh -c 'DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq opensandbox-server' >>"$work/apt.log" 2>&1 ||
    fail "apt-get purge"
if in_ct test -e /etc/opensandbox/config.lua || in_ct test -e /var/lib/opensandbox; then
    fail "purge left /etc/opensandbox/config.lua or /var/lib/opensandbox"
fi
log "removed (stopped) and purged (configuration and state gone)"
log "PASS ($((SECONDS - lock_wait)) s, plus $lock_wait s waiting for the lock ${PACKAGE_TEST_LOCK:-(none)})"
