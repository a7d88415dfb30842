#!/bin/sh
# Builds the test backend tests/backends/ws_echo.c (static, musl-gcc) and the image local/ws-echo:latest
# with `docker import`: the local/busybox:latest rootfs (tests/images/build-busybox.sh builds it) plus
# /ws_echo. The image has no entrypoint of its own; sandboxes are created with entrypoint ["/ws_echo"]
# and env PORT (default 8080). No network access is needed.
#
# Usage: tests/images/build-ws-echo.sh [--force]
#   Skips the build when the image is already present and newer than the source, unless --force.
#   Also leaves the binary at build/tests/ws_echo (OUT to change).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
IMAGE=${IMAGE:-local/ws-echo:latest}
BASE=${BASE:-local/busybox:latest}
SRC=$root/tests/backends/ws_echo.c
OUT=${OUT:-$root/build/tests/ws_echo}

force=0
for arg in "$@"; do
    case "$arg" in
    --force) force=1 ;;
    *) echo "usage: $0 [--force]" >&2; exit 2 ;;
    esac
done

if ! command -v musl-gcc >/dev/null 2>&1; then
    echo "musl-gcc not found: apt-get install musl-tools" >&2
    exit 1
fi
mkdir -p "$(dirname "$OUT")"
if [ "$force" -eq 1 ] || [ ! -x "$OUT" ] || [ -n "$(find "$SRC" -newer "$OUT")" ]; then
    musl-gcc -std=c11 -Wall -Wextra -Werror -O2 -static -o "$OUT" "$SRC"
    strip "$OUT"
    force=1
fi

if [ "$force" -eq 0 ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "$IMAGE already present (use --force to rebuild)"
    exit 0
fi

sh "$here/build-busybox.sh" >/dev/null

work=$(mktemp -d)
cid=
cleanup() {
    [ -n "$cid" ] && docker rm -f "$cid" >/dev/null 2>&1
    rm -rf "$work"
}
trap cleanup EXIT
cid=$(docker create --label opensandbox.test=1 "$BASE" /bin/true)
mkdir -p "$work/root"
docker export "$cid" | tar -C "$work/root" -xf -
cp "$OUT" "$work/root/ws_echo"
chmod 0755 "$work/root/ws_echo"
tar -C "$work/root" --numeric-owner --owner=0 --group=0 -cf - . |
    docker import \
        -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        -c 'ENV PORT=8080' \
        -c 'CMD ["/ws_echo"]' \
        -m "ws_echo test backend for opensandbox" \
        - "$IMAGE" >/dev/null
echo "built $IMAGE"
