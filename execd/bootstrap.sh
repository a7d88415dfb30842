#!/bin/sh
# bootstrap.sh: the sandbox container's entrypoint (API.md 8.4). POSIX sh, no bash needed.
#
# Starts the agent in the background with its output appended to /tmp/execd.log, removes the
# agent's token (EXECD_ACCESS_TOKEN) from this shell's environment, so that the user's process never
# sees it, then replaces this shell with the user's entrypoint ("$@"), so the user's process is the container's main
# process: it receives SIGTERM from `docker stop` directly, and its exit status becomes the
# container's exit code. The agent is an orphaned child of that process and is killed with the
# container.
EXECD=${OPENSANDBOX_EXECD_BIN:-/opt/opensandbox/execd}

# A warm pool member (the server's pools): no entrypoint yet. The agent's process stays the main
# process until a claim hands it the entrypoint to exec (execd/src/pool.c).
if [ -n "${OPENSANDBOX_POOL_MEMBER:-}" ] && [ -x "$EXECD" ]; then
    exec "$EXECD" --pool-member
fi

if [ -x "$EXECD" ]; then
    "$EXECD" >>/tmp/execd.log 2>&1 </dev/null &
else
    echo "bootstrap: $EXECD not found or not executable" >>/tmp/execd.log
fi
unset EXECD_ACCESS_TOKEN

# The start gate: the user's process starts only once the server has put the sandbox's network rules
# (isolation, network policy) in place (it opens this FIFO then). A gate that fails (or is never opened)
# ends the sandbox: never run without them.
if [ -n "${OPENSANDBOX_START_GATE:-}" ]; then
    gate=$OPENSANDBOX_START_GATE
    unset OPENSANDBOX_START_GATE
    if ! "$EXECD" --wait-gate "$gate"; then
        echo "bootstrap: the start gate was not opened; not starting the entrypoint" >>/tmp/execd.log
        exit 125
    fi
    unset gate
fi

if [ "$#" -eq 0 ]; then
    # no entrypoint given: keep the container alive, and exit promptly on SIGTERM
    trap 'exit 0' TERM INT
    while :; do
        sleep 3600 &
        wait $!
    done
fi
exec "$@"
