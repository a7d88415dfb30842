#!/bin/sh
# Builds the server (and the in-sandbox agent) into build/, and fetches the API docs assets.
#   scripts/build.sh            release build in build/
#   BUILD_DIR=build-asan CMAKE_ARGS="-DOPENSANDBOX_SANITIZE=ON" scripts/build.sh
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${BUILD_DIR:-$root/build}
# shellcheck disable=SC2086
cmake -S "$root" -B "$dir" ${CMAKE_ARGS:-} >/dev/null
cmake --build "$dir" -j"$(nproc)"
if [ ! -f "$root/build/docs-assets/redoc.standalone.js" ]; then
    sh "$root/scripts/docs-assets.sh" "$root/build/docs-assets" || echo "build: docs assets not fetched (npm unavailable?)" >&2
fi
