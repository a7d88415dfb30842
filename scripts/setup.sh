#!/bin/sh
# Installs what the build, the server and the tests need, from Debian's archive (apt-get update once, only
# when something is missing). Idempotent and quiet when everything is there. Run as root (or with sudo).
set -eu

PKGS="cmake make gcc pkg-config clang clang-format curl ca-certificates iproute2 procps
liblua5.4-dev lua5.4 lua-cjson lua-dbi-sqlite3 lua-filesystem lua-busted lua-check lua-yaml lua-basexx
libmicrohttpd-dev libcurl4-openssl-dev libssl-dev uuid-dev libsqlite3-dev g++ libtomlplusplus-dev
docker.io busybox-static musl-tools wrk nginx-light docker-registry apache2-utils valgrind
libclang-rt-14-dev prometheus python3 python3-venv libnftables-dev nftables dnsmasq-base debootstrap
chromium libmimalloc-dev libnftnl-dev libmnl-dev"

missing=""
for p in $PKGS; do
    dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
command -v npm >/dev/null 2>&1 || missing="$missing npm"

if [ -n "$missing" ]; then
    echo "setup: installing:$missing"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    # shellcheck disable=SC2086
    $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
