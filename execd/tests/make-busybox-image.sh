#!/bin/sh
# make-busybox-image.sh: creates the local image local/busybox:latest (if missing) from the
# host's busybox-static (Debian package busybox-static), with no registry access:
# a root filesystem of /bin/busybox plus one symlink per applet, imported with `docker import`.
# Usage: tests/make-busybox-image.sh [image-name]
set -eu
IMAGE=${1:-local/busybox:latest}
BUSYBOX=${BUSYBOX:-/bin/busybox}

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "$IMAGE already exists"
    exit 0
fi
if ! "$BUSYBOX" --list >/dev/null 2>&1 || ! file -L "$BUSYBOX" 2>/dev/null | grep -q static; then
    # `file` may be absent: fall back to ldd's verdict
    if ldd "$BUSYBOX" >/dev/null 2>&1; then
        echo "$BUSYBOX is not a static busybox (apt-get install busybox-static)" >&2
        exit 1
    fi
fi
ROOT=$(mktemp -d)
trap 'rm -rf "$ROOT"' EXIT
mkdir -p "$ROOT/bin" "$ROOT/tmp" "$ROOT/etc" "$ROOT/root" "$ROOT/proc" "$ROOT/sys" "$ROOT/dev"
chmod 1777 "$ROOT/tmp"
cp "$BUSYBOX" "$ROOT/bin/busybox"
for applet in $("$BUSYBOX" --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$ROOT/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$ROOT/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$ROOT/etc/group"
tar -C "$ROOT" -cf - . | docker import \
    --change 'ENV PATH=/bin' --change 'CMD ["/bin/sh"]' - "$IMAGE"
echo "created $IMAGE"
