#!/bin/sh
# Fetches the API documentation assets at build time and copies them where the server serves them from.
#
#   scripts/docs-assets.sh [OUT_DIR]      (default: <repo>/build/docs-assets)
#
# The npm packages pinned in package.json (swagger-ui-dist, redoc) are installed into build/docs-npm with
# the ordinary npm client (`npm ci` when a package-lock.json exists, else `npm install`), with install
# scripts disabled and peer dependencies skipped (we only need the prebuilt bundles inside the two packages).
# Then the four files /docs and /redoc load are copied to OUT_DIR:
#   swagger-ui-bundle.js  swagger-ui-standalone-preset.js  swagger-ui.css  redoc.standalone.js
# The server reads them from config `server.docs_assets_dir` (default <install root>/build/docs-assets in a
# source tree; `cmake --install` copies them to <prefix>/share/opensandbox/docs-assets, cmake/Packaging.cmake).
# Needs node and npm (Debian: apt-get install -y npm) and access to the npm registry.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/build/docs-assets}
work=$root/build/docs-npm

command -v npm >/dev/null 2>&1 || {
    echo "docs-assets: npm is not installed (apt-get install -y npm)" >&2
    exit 1
}

mkdir -p "$work" "$out"
cp "$root/package.json" "$work/package.json"
flags="--ignore-scripts --legacy-peer-deps --no-audit --no-fund --loglevel=error"
if [ -f "$root/package-lock.json" ]; then
    cp "$root/package-lock.json" "$work/package-lock.json"
    (cd "$work" && npm ci $flags)
else
    (cd "$work" && npm install --no-package-lock $flags)
fi

copy() {
    if [ ! -s "$work/node_modules/$1" ]; then
        echo "docs-assets: $1 is missing from the installed package" >&2
        exit 1
    fi
    cp "$work/node_modules/$1" "$out/$(basename "$1")"
}
copy swagger-ui-dist/swagger-ui-bundle.js
copy swagger-ui-dist/swagger-ui-standalone-preset.js
copy swagger-ui-dist/swagger-ui.css
copy redoc/bundles/redoc.standalone.js

echo "docs-assets: copied to $out"
