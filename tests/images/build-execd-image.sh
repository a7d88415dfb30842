#!/bin/sh
# Builds local/execd-image:latest, an upstream-style agent image for the runtime.execd_image option
# (API.md §8.4): /execd (our static agent) and /bootstrap.sh at the root, nothing else.
#   tests/images/build-execd-image.sh [--force]
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
img=local/execd-image:latest
if [ "${1:-}" != "--force" ] && docker image inspect "$img" >/dev/null 2>&1; then
    exit 0
fi
bin=$root/build/execd/opensandbox-execd
[ -x "$bin" ] || { echo "build-execd-image: $bin not built" >&2; exit 1; }
dir=$(mktemp -d /tmp/osb-execd-image.XXXXXX)
cp "$bin" "$dir/execd"
cp "$root/execd/bootstrap.sh" "$dir/bootstrap.sh"
chmod 755 "$dir/execd" "$dir/bootstrap.sh"
tar -C "$dir" -cf - execd bootstrap.sh | docker import - "$img" >/dev/null
rm -rf "$dir"
echo "built $img"
