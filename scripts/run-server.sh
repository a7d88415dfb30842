#!/bin/sh
# README command 1: install what is missing, build, start Docker if needed, and run the server with the
# default configuration (./config.lua; pass --config PATH or other flags through).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
sh "$root/scripts/setup.sh"
sh "$root/scripts/build.sh"
sh "$root/scripts/docker-up.sh"
cd "$root"
exec "$root/build/opensandbox-server" "$@"
