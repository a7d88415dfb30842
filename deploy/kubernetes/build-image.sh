#!/bin/bash
# Builds the server's container image from this checkout, with no registry and no base image: the built
# binary, the static agent, the Lua code, the default hooks, and exactly the shared libraries and Lua modules
# they load (from this Debian machine), in a root filesystem that `docker import` turns into an image.
#
#   deploy/kubernetes/build-image.sh [IMAGE]      (default opensandbox-server:dev; builds the server first)
#
# Layout: /opt/opensandbox-server/{opensandbox-server, execd/opensandbox-execd, execd/bootstrap.sh, lua,
# hooks, config.lua, build/docs-assets}; the server finds its root from its own directory. The process runs
# as uid 65532 with its state under /var/lib/opensandbox (a volume in deploy/kubernetes/server.yaml).
# Load it into a cluster's nodes (tests/k8s/cluster.sh load-image IMAGE, `kind load`, or push it to your
# registry).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
image=${1:-opensandbox-server:dev}
cd "$root"
[ -x build/opensandbox-server ] && [ -x build/execd/opensandbox-execd ] || sh scripts/build.sh >&2

work=$(mktemp -d /tmp/osb-image.XXXXXX)
trap 'rm -rf "$work"' EXIT
fs=$work/rootfs
app=$fs/opt/opensandbox-server
mkdir -p "$app/execd" "$app/build" "$fs/tmp" "$fs/etc" "$fs/var/lib/opensandbox"
chmod 1777 "$fs/tmp"
install -m 0755 build/opensandbox-server "$app/opensandbox-server"
install -m 0755 build/execd/opensandbox-execd "$app/execd/opensandbox-execd"
install -m 0755 execd/bootstrap.sh "$app/execd/bootstrap.sh"
cp -r lua hooks "$app/"
install -m 0644 config.lua "$app/config.lua"
[ -d build/docs-assets ] && cp -r build/docs-assets "$app/build/"

# the Lua modules the server requires at run time (their Debian packages' 5.4 files; basexx ships only for
# 5.1/5.2, where common.base64 finds it)
mods=$(dpkg -L lua-cjson lua-dbi-common lua-dbi-sqlite3 lua-filesystem lua-yaml lua-basexx |
    grep -E '^/usr/(share/lua/5\.4/|lib/x86_64-linux-gnu/lua/5\.4/|share/lua/5\.[12]/basexx\.lua$)' |
    while read -r f; do [ -f "$f" ] && echo "$f"; done)
# copies a file (a link as a link) to the same path under the root filesystem
put() {
    mkdir -p "$fs$(dirname "$1")"
    cp -a "$1" "$fs$1"
}
for f in $mods; do
    put "$f"
    real=$(readlink -f "$f") # Debian's 5.4 module files are often links to the 5.1 ones
    [ "$real" = "$f" ] || put "$real"
done

# every shared library the binary and those modules load, with the links that name them
libs() {
    for f in "$app/opensandbox-server" $mods; do
        case $f in *.so*) ldd "$f" ;; */opensandbox-server) ldd "$f" ;; esac
    done | awk '/=>/ { print $3 } /^\t\/lib/ { print $1 }' | sort -u
}
for lib in $(libs); do
    [ -f "$lib" ] || continue
    put "$lib"
    real=$(readlink -f "$lib")
    [ "$real" = "$lib" ] || put "$real"
done
# the dynamic loader under both of its names
for ld in /lib64/ld-linux-x86-64.so.2 /lib/x86_64-linux-gnu/ld-linux-x86-64.so.2; do
    [ -e "$ld" ] && put "$ld" && put "$(readlink -f "$ld")"
done
# a merged /usr: /lib -> usr/lib as on Debian 12
if [ -L /lib ] && [ -d "$fs/lib" ] && [ ! -L "$fs/lib" ]; then
    mkdir -p "$fs/usr/lib" && cp -a "$fs/lib/." "$fs/usr/lib/" && rm -rf "$fs/lib" && ln -s usr/lib "$fs/lib"
fi
printf 'root:x:0:0:root:/root:/sbin/nologin\nopensandbox:x:65532:65532::/var/lib/opensandbox:/sbin/nologin\n' \
    >"$fs/etc/passwd"
printf 'root:x:0:\nopensandbox:x:65532:\n' >"$fs/etc/group"
chown -R 65532:65532 "$fs/var/lib/opensandbox"

# a smoke check before import: the server starts in the image's root filesystem (every Lua module it and the
# Kubernetes runtime require loads) and answers /health; the cluster is absent, so the runtime stays
# unavailable, which is fine here
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$fs/tmp/smoke.lua" <<SMOKE
return { server = { host = "127.0.0.1", port = $port }, runtime = { type = "kubernetes" },
    kubernetes = { kubeconfig_path = "/nonexistent" }, store = { path = "/tmp/smoke.db" } }
SMOKE
chroot "$fs" /opt/opensandbox-server/opensandbox-server --config /tmp/smoke.lua >"$work/smoke.log" 2>&1 &
pid=$!
ok=""
for _ in $(seq 1 50); do
    if curl -fsS --max-time 1 "http://127.0.0.1:$port/health" >/dev/null 2>&1; then ok=1 && break; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
done
kill "$pid" 2>/dev/null || true
wait "$pid" 2>/dev/null || true
if [ -z "$ok" ] || grep -q '"task failed"' "$work/smoke.log"; then
    cat "$work/smoke.log" >&2
    echo "build-image: the server does not start in the image's root filesystem" >&2
    exit 1
fi
rm -f "$fs/tmp/smoke.lua" "$fs"/tmp/smoke.db*
tar -C "$fs" -c . | docker import \
    -c 'USER 65532:65532' -c 'WORKDIR /var/lib/opensandbox' -c 'ENV HOME=/var/lib/opensandbox' \
    -c 'EXPOSE 8080' -c 'ENTRYPOINT ["/opt/opensandbox-server/opensandbox-server"]' \
    -c 'CMD ["--config", "/etc/opensandbox/config.lua"]' - "$image" >/dev/null
echo "$image"
