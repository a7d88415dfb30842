#!/bin/sh
# Builds the Debian package (cmake/Packaging.cmake): configures build-pkg/ with the prefix /usr, builds, makes
# sure the docs assets and the static agent are there (a package without them would serve /docs without
# its scripts, or sandboxes without the agent), and runs cpack. Prints the path of the .deb last.
#   scripts/package.sh                 -> build-pkg/opensandbox-server_<version>_<arch>.deb
#   BUILD_DIR=/tmp/pkg scripts/package.sh
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${BUILD_DIR:-$root/build-pkg}
assets=$root/build/docs-assets

if [ ! -s "$assets/redoc.standalone.js" ]; then
    sh "$root/scripts/docs-assets.sh" "$assets" >&2
fi
# shellcheck disable=SC2086
cmake -S "$root" -B "$dir" -DCMAKE_INSTALL_PREFIX=/usr -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DOPENSANDBOX_DOCS_ASSETS_DIR="$assets" ${CMAKE_ARGS:-} >/dev/null
cmake --build "$dir" -j"$(nproc)" --target opensandbox-server opensandbox-execd >&2
for f in "$assets/swagger-ui-bundle.js" "$assets/swagger-ui-standalone-preset.js" "$assets/swagger-ui.css" \
    "$assets/redoc.standalone.js" "$dir/execd/opensandbox-execd"; do
    if [ ! -s "$f" ]; then
        echo "package: $f is missing" >&2
        exit 1
    fi
done
rm -f "$dir"/opensandbox-server_*.deb
(cd "$dir" && cpack -G DEB >&2)
ls "$dir"/opensandbox-server_*.deb
