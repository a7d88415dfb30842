#!/bin/sh
# Builds the test image local/busybox:latest with `docker import`, from Debian's busybox-static: a rootfs
# with /bin/busybox, a symlink in /bin for every applet (sh, sleep, cat, ...), /tmp (1777), /root and an
# /etc/passwd and /etc/group with root. No network access is needed.
#
# Usage: tests/images/build-busybox.sh [--force]
#   Skips the build when the image is already present, unless --force is given.
set -eu

IMAGE=${IMAGE:-local/busybox:latest}
BUSYBOX=${BUSYBOX:-/bin/busybox}

force=0
for arg in "$@"; do
    case "$arg" in
    --force) force=1 ;;
    *) echo "usage: $0 [--force]" >&2; exit 2 ;;
    esac
done

if [ "$force" -eq 0 ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "$IMAGE already present (use --force to rebuild)"
    exit 0
fi

if [ ! -x "$BUSYBOX" ]; then
    echo "$BUSYBOX not found: apt-get install busybox-static" >&2
    exit 1
fi
if ! applets=$("$BUSYBOX" --list 2>/dev/null) || [ -z "$applets" ]; then
    echo "$BUSYBOX does not list its applets" >&2
    exit 1
fi

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/etc" "$root/root" "$root/tmp" "$root/usr/bin" "$root/var/tmp"
chmod 1777 "$root/tmp" "$root/var/tmp"
chmod 0700 "$root/root"
cp "$BUSYBOX" "$root/bin/busybox"
chmod 0755 "$root/bin/busybox"
for applet in $applets; do
    [ "$applet" = busybox ] && continue
    ln -sf busybox "$root/bin/$applet"
done
# scripts often start with #!/usr/bin/env
ln -sf ../../bin/busybox "$root/usr/bin/env"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"

tar -C "$root" --numeric-owner --owner=0 --group=0 -cf - . |
    docker import \
        -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        -c 'CMD ["/bin/sh"]' \
        -m "busybox-static test image for opensandbox" \
        - "$IMAGE" >/dev/null
echo "built $IMAGE"
