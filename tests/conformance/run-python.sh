#!/bin/bash
# The Python side of the conformance suite: upstream's Python SDK (opensandbox), CLI (opensandbox-cli, `osb`)
# and MCP server (opensandbox-mcp), all pinned in python/requirements.txt and installed from PyPI into a venv
# of Debian's python3 (build/conformance-py), driving a real server that server.sh starts for the run (own
# docker.instance, API key, store) and stops afterwards; anything it leaves on Docker fails the run.
#   tests/conformance/run-python.sh [pytest [PYTEST ARGS...]]   the SDK suite (python/test_*.py)
#   tests/conformance/run-python.sh cli                         cli.sh: osb create/list/exec/files/kill
#   tests/conformance/run-python.sh mcp                         python/mcp_roundtrip.py: one MCP session
#   tests/conformance/run-python.sh exec CMD [ARGS...]          anything else, with the server's env set
# Tests of features still being merged carry the pytest marker pending_feature and are skipped by default;
# CONFORMANCE_PENDING=1 runs them too.
# Env: OPENSANDBOX_BIN, SANDBOX_IMAGE (default local/busybox:latest), OPENSANDBOX_USE_SERVER_PROXY=1,
# OPENSANDBOX_RUNTIME=kubernetes (+ KUBECONFIG), PYTHON (default /usr/bin/python3), CONFORMANCE_VENV.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
here=$root/tests/conformance
venv=$root/build/conformance-py
mode=${1:-pytest}
[ $# -gt 0 ] && shift

if [ -n "${CONFORMANCE_VENV:-}" ]; then
    venv=$CONFORMANCE_VENV # made by the caller (upstream-e2e.sh)
else
    bash "$here/python-venv.sh" "$venv"
fi
export PATH=$venv/bin:$PATH OPENSANDBOX_DISABLE_METRICS=1 SANDBOX_IMAGE=${SANDBOX_IMAGE:-local/busybox:latest}

# a host directory the volume tests may bind-mount (storage.allowed_host_paths), removed afterwards
host_dir=$(mktemp -d /tmp/osb-conformance-host.XXXXXX)
export CONFORMANCE_HOST_DIR=$host_dir
extra_paths=
for p in ${CONFORMANCE_EXTRA_HOST_PATHS:-}; do # upstream-e2e.sh: the directories upstream's suite mounts
    extra_paths="$extra_paths, \"$p\""
done
export CONFORMANCE_EXTRA_CONFIG="storage = { allowed_host_paths = { \"$host_dir\"$extra_paths } },"

# shellcheck source=tests/conformance/server.sh
. "$here/server.sh"
conformance_server_start
trap 'conformance_cleanup; rm -rf "$host_dir"' EXIT

rc=0
case $mode in
pytest)
    marker=()
    [ "${CONFORMANCE_PENDING:-}" = 1 ] && marker=(-m "pending_feature or not pending_feature")
    (cd "$here/python" && timeout 900 python -m pytest -q "${marker[@]}" "$@") || rc=1
    ;;
cli) timeout 600 bash "$here/cli.sh" || rc=1 ;;
mcp) timeout 300 python "$here/python/mcp_roundtrip.py" || rc=1 ;;
exec) "$@" || rc=1 ;;
*)
    echo "run-python.sh: unknown mode $mode (pytest, cli, mcp, exec)" >&2
    exit 2
    ;;
esac
[ "$rc" -eq 0 ] || conformance_log_tail 40
conformance_server_stop
conformance_leaks || rc=1
exit $rc
